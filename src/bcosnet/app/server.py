"""Start the app's web server, print its address, stop cleanly on Ctrl-C."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .workspace import Workspace

__all__ = ["serve", "launch"]


def launch(ws: Workspace, *, host: str = "127.0.0.1", port: int | None = None,
           figure_dir: Any = None) -> tuple[Any, str]:
    """Build the app of ``ws`` and start serving it in a background thread.

    Returns ``(blocks, url)``; stop it with ``blocks.close()``.  ``port=None``:
    the first free port from 7860 (gradio's rule).  Nothing is fetched from the
    internet: no analytics, no share link, fonts and scripts are served locally."""
    from .ui import _CSS, build_app

    demo = build_app(ws, figure_dir=figure_dir)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                            quiet=True, share=False, show_error=False, inbrowser=False,
                            css=_CSS, footer_links=[], ssr_mode=False, mcp_server=False,
                            enable_monitoring=False)
    return demo, str(url)


def serve(ws: Workspace, *, host: str = "127.0.0.1", port: int | None = None,
          out: IO[str] | None = None) -> int:
    """Serve ``ws`` until Ctrl-C (or SIGTERM); prints the address first.  Returns 0."""
    import signal

    out = sys.stdout if out is None else out
    try:
        demo, url = launch(ws, host=host, port=port)
    except OSError as e:
        where = f"port {port}" if port is not None else "ports 7860-7959"
        raise OSError(f"cannot serve on {host}, {where}: {e} — choose another with --port N"
                      ) from e
    print(f"bcosnet app: serving {url} (Ctrl-C stops it)", file=out, flush=True)

    def _term(_signo: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C works even where the process was started with SIGINT ignored (a
    # background job of a script); SIGTERM stops it the same way.
    old = {sig: signal.signal(sig, h) for sig, h in ((signal.SIGTERM, _term),
                                                     (signal.SIGINT, signal.default_int_handler))}
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        demo.close()
    print("bcosnet app: stopped", file=out, flush=True)
    return 0
