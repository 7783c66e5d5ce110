"""The framework ceiling: a bare Starlette route that answers a constant."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"predictions":[0.5]}'


async def predict(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/v1/models/fraud:predict", predict, methods=["POST"])])
