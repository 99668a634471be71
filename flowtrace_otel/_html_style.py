"""The stylesheet of the HTML tree and page (:mod:`flowtrace_otel.html`), scoped to its class.

Readable on light and dark backgrounds: the text colour is inherited (a notebook's own), the
accents come in a light and a dark set, chosen by the Jupyter theme when there is one
(``data-jp-theme-light`` in JupyterLab and Notebook 7, ``vscode-dark``/``vscode-light`` in VS
Code), else by the system's ``prefers-color-scheme``.
"""

_LIGHT = """--ft-dim: #59636e; --ft-err: #cf222e; --ft-fold: #8250df; --ft-tag: #0550ae;
  --ft-res: #116329; --ft-guide: #d1d9e0; --ft-hover: rgba(127, 127, 127, .12);
  --ft-page-bg: #ffffff; --ft-page-fg: #1f2328;"""

_DARK = """--ft-dim: #9198a1; --ft-err: #ff7b72; --ft-fold: #d2a8ff; --ft-tag: #79c0ff;
  --ft-res: #7ee787; --ft-guide: #3d444d; --ft-hover: rgba(200, 200, 200, .10);
  --ft-page-bg: #0d1117; --ft-page-fg: #e6edf3;"""

CSS = f""".flowtrace-otel {{ {_LIGHT}
  font-family: var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, Consolas,
    "DejaVu Sans Mono", monospace);
  font-size: var(--jp-code-font-size, 13px); line-height: 1.45; color: inherit; }}
@media (prefers-color-scheme: dark) {{ .flowtrace-otel {{ {_DARK} }} }}
[data-jp-theme-light="true"] .flowtrace-otel, .vscode-light .flowtrace-otel {{ {_LIGHT} }}
[data-jp-theme-light="false"] .flowtrace-otel, .vscode-dark .flowtrace-otel,
.vscode-high-contrast .flowtrace-otel {{ {_DARK} }}
.flowtrace-otel.ft-page {{ background: var(--ft-page-bg); color: var(--ft-page-fg);
  margin: 0; padding: 1em 1.5em; }}
.flowtrace-otel h1 {{ font-size: 1.25em; margin: 0 0 .25em; }}
.flowtrace-otel h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
.flowtrace-otel .ft-head {{ color: var(--ft-dim); margin-bottom: .3em; }}
.flowtrace-otel .ft-tree details > :not(summary) {{ margin-left: .55em; padding-left: .9em;
  border-left: 1px solid var(--ft-guide); }}
.flowtrace-otel .ft-tree summary {{ cursor: pointer; list-style-position: outside;
  margin-left: 1em; }}
.flowtrace-otel .ft-tree summary:hover, .flowtrace-otel .ft-tree .ft-call:hover {{
  background: var(--ft-hover); }}
.flowtrace-otel .ft-tree .ft-call, .flowtrace-otel .ft-tree .ft-cut,
.flowtrace-otel .ft-tree .ft-imports {{ margin-left: 1em; white-space: pre-wrap; }}
.flowtrace-otel .ft-tree summary {{ white-space: pre-wrap; }}
.flowtrace-otel .ft-fn {{ font-weight: bold; }}
.flowtrace-otel .ft-res {{ color: var(--ft-res); }}
.flowtrace-otel .ft-exc {{ color: var(--ft-err); }}
.flowtrace-otel .ft-propagated > summary, .flowtrace-otel .ft-call.ft-propagated {{
  text-decoration: underline wavy var(--ft-err); text-decoration-skip-ink: none;
  text-underline-offset: 3px; }}
.flowtrace-otel .ft-count {{ color: var(--ft-fold); font-weight: bold; }}
.flowtrace-otel .ft-tag {{ color: var(--ft-tag); }}
.flowtrace-otel .ft-dur, .flowtrace-otel .ft-cut, .flowtrace-otel .ft-imports,
.flowtrace-otel .ft-status {{ color: var(--ft-dim); }}
.flowtrace-otel .ft-notes {{ margin-top: .4em; color: var(--ft-dim); white-space: pre-wrap; }}
.flowtrace-otel a {{ color: var(--ft-tag); }}
.flowtrace-otel .ft-flame {{ position: relative; width: 100%; overflow: hidden;
  font-size: 12px; }}
.flowtrace-otel .ft-fb {{ position: absolute; height: 1.35em; line-height: 1.35em;
  box-sizing: border-box; border: 1px solid rgba(0, 0, 0, .25); border-radius: 2px;
  padding: 0 3px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  color: #111; }}
.flowtrace-otel .ft-fb:hover {{ border-color: #111; }}
"""
