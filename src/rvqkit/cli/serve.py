"""``rvqkit serve``: the codec server (REST, WebSocket streaming, browser page); needs ``rvqkit[server]``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import RvqkitError
from . import DEFAULT_MODEL, DeviceOpt, ModelOpt, app, err, load_codec, user_errors


@app.command()
@user_errors
def serve(
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    device: DeviceOpt = "cpu",
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload, MiB.")] = 50.0,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Longest audio per REST request, seconds.")
    ] = 600.0,
    max_streams: Annotated[int, typer.Option("--max-streams", help="Concurrent WebSocket streams.")] = 64,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Close sockets silent this long, seconds.")
    ] = 30.0,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="torch CPU threads (default: torch's choice; 1 is best on a busy machine)."
        ),
    ] = None,
    batching: Annotated[
        bool,
        typer.Option("--batching/--no-batching", help="Batch all live streams into one model call per step."),
    ] = True,
) -> None:
    """Serve the codec over HTTP: REST API under /v1, WebSocket streams, and a browser page at /."""
    try:
        import uvicorn

        from ..server import ServerSettings, create_app
    except ImportError as e:
        raise RvqkitError(f"the server needs its extra: pip install 'rvqkit[server]' ({e})") from None
    settings = ServerSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_duration_s=max_duration,
        max_streams=max_streams,
        idle_timeout_s=idle_timeout,
        batching=batching,
    )
    if threads is not None:
        if threads < 1:
            raise RvqkitError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    codec = load_codec(model, device)
    app_ = create_app(codec, settings)
    err.print(f"serving {codec.name} on http://{host}:{port}/ (API docs at /docs; Ctrl-C stops)")
    uvicorn.run(
        app_, host=host, port=port, log_level="warning", ws_max_size=settings.max_message_bytes + 1024
    )
