"""``rvqkit serve``: the codec server (REST, WebSocket streaming, browser page); needs ``rvqkit[server]``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import RvqkitError
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DeviceOpt,
    ModelOpt,
    ThreadsOpt,
    app,
    err,
    load_codec,
    user_errors,
)


@app.command()
@user_errors
def serve(
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload, MiB.")] = 50.0,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Longest audio per REST request, seconds.")
    ] = 600.0,
    max_streams: Annotated[int, typer.Option("--max-streams", help="Concurrent WebSocket streams.")] = 64,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Close sockets silent this long, seconds.")
    ] = 30.0,
    batching: Annotated[
        bool,
        typer.Option(
            "--batching/--no-batching",
            metavar="",
            help="Batch all live streams into one model call per step.",
        ),
    ] = True,
    trusted_host: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-host",
            help="Also answer to this Host name (repeatable; '*' any). Trusted by default: localhost, "
            "127.0.0.1, ::1 and the --host address (with 0.0.0.0: this machine's names and addresses).",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            help="Let web pages from this origin (e.g. https://app.example:8443) open sockets and POST "
            "(repeatable; '*' any). By default only the server's own page may.",
        ),
    ] = None,
    max_json_mb: Annotated[
        float | None,
        typer.Option(
            "--max-json-mb",
            help="Largest /v1/decode/json body, MiB (default: what --max-duration of codes needs, at most 2). Parsing "
            "holds Python's GIL, about 50 ms per MB: lower it to bound pauses for live streams.",
        ),
    ] = None,
    max_jobs: Annotated[
        int, typer.Option("--max-jobs", help="REST model requests admitted at once; more get 503.")
    ] = 4,
    max_job_samples: Annotated[
        int | None,
        typer.Option(
            "--max-job-samples",
            help="Most model work per REST request, samples at the model rate (default: --max-duration).",
        ),
    ] = None,
    job_piece: Annotated[
        float,
        typer.Option("--job-piece", help="REST jobs run in pieces of this many seconds; streams go between."),
    ] = 2.0,
    max_stream: Annotated[
        float, typer.Option("--max-stream", help="Longest signal per WebSocket stream, seconds.")
    ] = 3600.0,
    max_backlog: Annotated[
        float,
        typer.Option(
            "--max-backlog", help="Audio a stream may have outstanding before it is closed, seconds."
        ),
    ] = 10.0,
    min_stream_rate: Annotated[
        float,
        typer.Option(
            "--min-stream-rate",
            help="Seconds of audio per second a stream must carry after --stream-grace (0: no minimum).",
        ),
    ] = 0.25,
    stream_grace: Annotated[
        float, typer.Option("--stream-grace", help="Seconds before --min-stream-rate applies.")
    ] = 10.0,
) -> None:
    """Serve the codec over HTTP: REST API under /v1, WebSocket streams, and a browser page at /."""
    try:
        import uvicorn

        from ..server import ServerSettings, create_app
        from ..server.security import trusted_hosts_for
    except ImportError as e:
        raise RvqkitError(f"the server needs its extra: pip install 'rvqkit[server]' ({e})") from e
    settings = ServerSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_duration_s=max_duration,
        max_streams=max_streams,
        idle_timeout_s=idle_timeout,
        batching=batching,
        trusted_hosts=trusted_hosts_for(host, trusted_host or ()),
        allowed_origins=tuple(allow_origin or ()),
        max_jobs=max_jobs,
        max_json_bytes=None if max_json_mb is None else int(max_json_mb * 1024 * 1024),
        max_job_samples=max_job_samples,
        job_piece_s=job_piece,
        max_stream_s=max_stream,
        max_backlog_s=max_backlog,
        min_stream_rate=min_stream_rate,
        stream_grace_s=stream_grace,
    )
    codec = load_codec(model, device)
    app_ = create_app(codec, settings)
    err.print(f"serving {codec.name} on http://{host}:{port}/ (API docs at /docs; Ctrl-C stops)")
    uvicorn.run(
        app_, host=host, port=port, log_level="warning", ws_max_size=settings.max_message_bytes + 1024
    )
