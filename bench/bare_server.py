"""The ceiling of the ingest benchmark: a bare Starlette route that only returns 200.

    python -m bench.bare_server --port 8090 [--http h11|httptools]

Served by uvicorn with the ingress's settings (uvloop, no access log), so the ratio
ingress/bare shows what the webhook path costs on top of the server itself.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def bare(request: Request) -> Response:
    await request.body()
    return Response(b'{"result":"ok"}', media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", default="auto")
    args = parser.parse_args()
    app = Starlette(routes=[Route("/bare", bare, methods=["POST"]), Route("/healthz", healthz)])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=args.http,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
