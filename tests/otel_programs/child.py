"""The child process of parent_child.py."""


def child_work() -> int:
    return 42


if __name__ == "__main__":
    child_work()
