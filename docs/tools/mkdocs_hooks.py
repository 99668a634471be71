"""MkDocs hooks (mkdocs.yml ``hooks:``): the package's docstrings are written for Sphinx.

Their roles (``:class:`CallEvent```, ``:meth:`start```) reach the API page as
``:class:<code>CallEvent</code>``; this keeps the code and drops the role.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:mod|meth|class|func|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """Drop Sphinx roles in front of inline code."""
    return _ROLE.sub("", html)
