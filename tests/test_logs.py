"""The package's log lines: shown inside axolotl (tests/test_plugin.py, tests/test_e2e.py) and by its own commands."""

from __future__ import annotations

import logging

import pytest

from axolotl_orpheus import logs


@pytest.fixture
def package_logger():
    """The package's logger, put back as it was after the test."""
    logger = logging.getLogger(logs.LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_info_lines_pass_on_the_main_process_and_warnings_elsewhere(package_logger, monkeypatch, capsys):
    monkeypatch.delenv("AXOLOTL_LOG_LEVEL", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    logs.show_info_logs(own_handler=True)
    logs.show_info_logs(own_handler=True)  # again: still one handler
    logging.getLogger("axolotl_orpheus.codec.loading").info("SNAC x on cpu: torch's kernels")
    assert capsys.readouterr().err.count("[INFO] [axolotl_orpheus.codec.loading] SNAC x on cpu: torch's kernels") == 1

    monkeypatch.setenv("LOCAL_RANK", "1")  # another rank of a distributed run
    logs.show_info_logs()
    assert package_logger.level == logging.WARNING
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("AXOLOTL_LOG_LEVEL", "debug")
    logs.show_info_logs()
    assert package_logger.level == logging.DEBUG


def test_the_commands_print_the_packages_info_lines(tmp_path, standins, capsys):
    """`axolotl-orpheus speak` says which SNAC path runs, as `axolotl preprocess` does (the CLI's main sets the
    package's logs up with show_info_logs(own_handler=True))."""
    from axolotl_orpheus.cli.main import main

    out = tmp_path / "hi.wav"
    model, snac = str(standins["model"]), str(standins["snac"])
    arguments = ["--text", "Hi.", "--out", str(out), "--max-new-tokens", "14", "--device", "cpu"]
    main(["speak", "--model", model, "--snac-model", snac, *arguments])
    assert f"[INFO] [axolotl_orpheus.codec.loading] SNAC {snac} on cpu: " in capsys.readouterr().err
    assert out.is_file()
