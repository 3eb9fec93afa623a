"""Progress on stderr for the CLI: bars for loops with a known length, spinners for opaque steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Set by the CLI's SIGINT/SIGTERM handling. The KeyboardInterrupt a handler raises is lost when the signal
#: lands inside a finalizer (Python prints "Exception ignored in __del__" and goes on); every progress step
#: checks this flag, so a conversion still stops at the next step and cleans up.
stop_requested = False


def _check_stop() -> None:
    if stop_requested:
        raise KeyboardInterrupt


@contextmanager
def rich_progress() -> Iterator[Callable]:
    """Yield a ``progress(description, total)`` factory drawing on stderr (plain lines when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgekit._escape import terminal_console, visible

    console = terminal_console(stderr=True)
    columns = [SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bars:

        @contextmanager
        def task(description: str, total: int | None) -> Iterator[Callable[[], None]]:
            _check_stop()
            if not console.is_terminal:
                console.print(f"{description}...")
            task_id = bars.add_task(visible(description), total=total)
            def advance() -> None:
                _check_stop()
                bars.advance(task_id)

            try:
                yield advance
                _check_stop()
            finally:
                bars.update(task_id, completed=bars.tasks[task_id].total or 1, total=bars.tasks[task_id].total or 1)

        yield task
