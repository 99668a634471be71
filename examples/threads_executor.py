"""Work handed to threads: plain Threads, then a ThreadPoolExecutor (map and submit).

Run it:
    flowtrace-otel run examples/threads_executor.py          # tree on stderr (no backend needed)
    FLOWTRACE_OTEL=1 python examples/threads_executor.py     # spans to the OTLP endpoint

The trace keeps the hand-offs: each ``worker`` that ran in a ``worker-N`` thread is a child of
``run_threads`` (which started the thread) and calls ``resize`` there, and each ``checksum`` that
ran in a ``pool`` worker thread is a child of ``run_pool`` (which submitted it), not of the thread
that happened to run it. All of it is one trace under ``main``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


def resize(image: str, width: int) -> str:
    return f"{image}@{width}px"


def worker(image: str, results: dict[str, str], lock: threading.Lock) -> None:
    thumbnail = resize(image, 128)
    with lock:
        results[image] = thumbnail


def run_threads(images: list[str]) -> dict[str, str]:
    results: dict[str, str] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=worker, args=(image, results, lock), name=f"worker-{n}")
               for n, image in enumerate(images)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def checksum(data: bytes) -> int:
    return sum(data) % 251


def run_pool(blobs: list[bytes]) -> tuple[list[int], int]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pool") as pool:
        sums = list(pool.map(checksum, blobs))
        total = pool.submit(checksum, b"".join(blobs)).result()
    return sums, total


def main() -> None:
    thumbnails = run_threads(["cat.png", "dog.png", "fox.png"])
    for image in sorted(thumbnails):
        print(image, "->", thumbnails[image])
    sums, total = run_pool([b"alpha", b"beta", b"gamma"])
    print("checksums:", sums, "total:", total)


if __name__ == "__main__":
    main()
