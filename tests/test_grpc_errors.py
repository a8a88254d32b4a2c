"""How a gRPC method's failure reaches its caller (services/core/runtime.grpc_call), on a real
in-process grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from services.core.errors import UpstreamUnavailable
from services.core.metrics import ServiceMetrics
from services.core.runtime import grpc_call


async def _serve(delay: float, failures: list):
    metrics = ServiceMetrics("test")

    async def slow_then_fail(request: bytes, context) -> bytes:
        try:
            async with grpc_call(metrics, "Slow", context):
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    # what an upstream call does when its caller's call is cancelled under it: it ends
                    # in an error of its own (the pipeline's gRPC clients: UpstreamUnavailable)
                    raise UpstreamUnavailable("sampler", "cancelled") from None
                raise UpstreamUnavailable("sampler", "busy")
        except BaseException as exc:  # what escapes grpc_call reaches grpc's own logger as a traceback
            failures.append(exc)
            raise
        return b""

    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow_then_fail)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.parametrize("caller_timeout", [2.0, 0.05])
def test_a_failure_is_a_status_and_a_cancelled_call_ends_quietly(caller_timeout, caplog):
    """Answered: UNAVAILABLE with the message. Cancelled by its caller (deadline) before the failure:
    no abort on the dead call, so nothing escapes to grpc's logger as a traceback."""

    async def run():
        failures: list = []
        server, port = await _serve(0.3, failures)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary("/test.Slow/Call")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(b"", timeout=caller_timeout)
            await asyncio.sleep(0.5)  # the handler finishes after its caller left
        finally:
            await server.stop(None)
        return err.value, failures

    with caplog.at_level(logging.ERROR):
        err, failures = asyncio.run(run())
    if caller_timeout > 1:
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "sampler service is unavailable: busy" in err.details()
        assert all(isinstance(f, grpc.aio.AbortError) for f in failures)
    else:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert all(isinstance(f, asyncio.CancelledError) for f in failures), failures
        assert not [r for r in caplog.records if r.exc_info], caplog.text
