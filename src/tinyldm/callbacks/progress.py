"""A progress bar that suits the terminal: Rich when attached to a TTY, plain tqdm otherwise.

Rich's live display turns into a flood of partial lines in log files and CI output, so
non-interactive runs get the line-oriented tqdm bar instead.
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar


def progress_bar(refresh_rate: int = 1) -> ProgressBar:
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=max(refresh_rate, 20))
