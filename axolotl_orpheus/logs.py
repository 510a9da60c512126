"""The package's log lines, shown wherever it runs.

Every module logs through `logging.getLogger(__name__)`, under the package's logger `axolotl_orpheus`. Left alone,
that logger inherits the root logger's level, WARNING in axolotl's setup (and by default), so no INFO line of
ours would show. `show_info_logs` sets it up once per process: inside axolotl (the plugin's registration) its lines
go to axolotl's handlers, whose filter passes loggers named `axolotl*` at AXOLOTL_LOG_LEVEL; elsewhere (the
`axolotl-orpheus` commands, a Ray worker) to a handler of its own on stderr.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "axolotl_orpheus"
FORMAT = "[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"  # axolotl's concise format


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when a line is logged (a test's capture, a redirection)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_info_logs(own_handler: bool | None = None) -> logging.Logger:
    """Let the package's INFO lines through (AXOLOTL_LOG_LEVEL's level when set), on the main process only: the
    other ranks of a distributed run show warnings and errors, as axolotl's own loggers do.

    `own_handler`: also write them to stderr, for a process where nothing else shows log lines (a command of ours);
    None: only where the root logger has no handler (an encoding process, a Ray worker), and not inside axolotl,
    which gives root its handlers. They propagate to the root logger's handlers either way. Calling it again adds
    no second handler.
    """
    logger = logging.getLogger(LOGGER)
    main_process = os.environ.get("LOCAL_RANK", "0") == "0"
    level = os.environ.get("AXOLOTL_LOG_LEVEL", "INFO").upper() if main_process else "WARNING"
    logger.setLevel(level)
    if own_handler is None:
        own_handler = not logging.getLogger().handlers
    if own_handler and not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        logger.addHandler(_Stderr())
    return logger
