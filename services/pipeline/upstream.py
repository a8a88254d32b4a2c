"""The pipeline's gRPC clients for the four model services: one channel each, reused by every
request, with fast reconnects and retries for the (idempotent) inference calls.

Every call here is a pure function of its request (no side effects), so retrying on
UNAVAILABLE / RESOURCE_EXHAUSTED is safe; FilterDataset (which writes files) is not called
from here. A service that is down fails the call within a few hundred milliseconds (the channel
does not wait for it to come back), and the channel reconnects on its own — at most a second
apart — once it is back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import grpc
import numpy as np

from services.core.errors import BadRequest, UpstreamUnavailable
from services.core.grpc_server import MAX_MESSAGE_BYTES
from services.core.proto import conditions_pb, pb, rpc
from services.pipeline.coalesce import Coalescer

RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}
IDEMPOTENT = [("facegen.v1.SamplerService", "Sample"), ("facegen.v1.SamplerService", "Edit"),
              ("facegen.v1.CriticService", "Score"), ("facegen.v1.CriticService", "Retouch"),
              ("facegen.v1.AttributeService", "Infer"), ("facegen.v1.FilterService", "Classify")]
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps({"methodConfig": [{
        "name": [{"service": s, "method": m} for s, m in IDEMPOTENT], "retryPolicy": RETRY_POLICY}]})),
]
# upstream codes that mean "the service could not answer", as opposed to "the request was wrong"
UNAVAILABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                     grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                     grpc.StatusCode.INTERNAL}


def raw(images) -> list:
    """HWC uint8 images (an array or a list of them) as raw proto images."""
    return [pb.Image(raw=pb.RawImage(pixels=x.tobytes(), height=x.shape[0], width=x.shape[1])) for x in images]


def from_raw(msg) -> np.ndarray:
    return np.frombuffer(msg.pixels, np.uint8).reshape(msg.height, msg.width, 3)


@dataclass
class Realness:
    realness: float
    realness_map: np.ndarray


def _realness(msg) -> Realness:
    m = msg.realness_map
    return Realness(msg.realness, np.asarray(m.values, np.float32).reshape(m.size, m.size))


class Upstreams:
    def __init__(self, targets: dict[str, str], coalesce: int = 0) -> None:
        """coalesce: merge concurrent Retouch / Score / Infer / Classify calls while this many of
        a kind are in flight (services/pipeline/coalesce.py); 0 = every request calls alone."""
        self.targets = targets
        self.channels = {name: grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for name, t in targets.items()}
        self.sampler = rpc.SamplerServiceStub(self.channels["sampler"])
        self.critic = rpc.CriticServiceStub(self.channels["critic"])
        self.attributes = rpc.AttributeServiceStub(self.channels["attributes"])
        self.filter = rpc.FilterServiceStub(self.channels["filter"])
        wrap = (lambda send: Coalescer(send, max_in_flight=coalesce)) if coalesce else (lambda send: send)
        self._retouch, self._score = wrap(self._retouch_rows), wrap(self._score_rows)
        self._infer, self._classify = wrap(self._infer_rows), wrap(self._classify_rows)

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()

    def check_reachable(self, services: list[str]) -> None:
        """Refuse at once when a service's channel is failing to connect (its last connection
        attempt was refused or reset): a call to it would fail the same way, but only after the
        candidates were drawn and retouched — work a loaded pipeline would queue behind."""
        for name in services:
            if self.channels[name].get_state(try_to_connect=False) == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise UpstreamUnavailable(name, f"cannot connect to {self.targets[name]} (retry shortly)")

    def _late(self, service: str) -> TimeoutError:
        return TimeoutError(f"the request ran out of time waiting for the {service} service ({self.targets[service]})")

    async def _call(self, service: str, method, request, timeout: float):
        end = time.monotonic() + timeout
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            # the request's own deadline passing is DEADLINE_EXCEEDED / 504, not the service's
            # failure: it must neither read as that service's outage nor, with allow_partial,
            # drop the service as "missing" from faces nobody is waiting for any more
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() >= end - 0.005:
                raise self._late(service) from None
            if exc.code() in UNAVAILABLE_CODES:
                raise UpstreamUnavailable(service, f"{exc.code().name} from {self.targets[service]}: {exc.details()}") from None
            raise BadRequest(f"{service}: {exc.details()}") from None

    async def sample(self, conditions: np.ndarray, names: list[str], temperature: float, seed: int,
                     timeout: float) -> np.ndarray:
        req = pb.SampleRequest(conditions=[conditions_pb(names, c) for c in conditions],
                               count=len(conditions), temperature=temperature, seed=seed, raw_output=True)
        resp = await self._call("sampler", self.sampler.Sample, req, timeout)
        return np.stack([from_raw(f.raw) for f in resp.faces])

    async def edit(self, image: bytes, measured: np.ndarray, target: np.ndarray, names: list[str],
                   keep: int | None, seed: int, timeout: float) -> np.ndarray:
        """One face (encoded bytes, as the user sent it) redrawn with the target conditions."""
        req = pb.EditRequest(images=[pb.Image(encoded=image)], seed=seed, raw_output=True,
                             measured=[conditions_pb(names, measured)], target=[conditions_pb(names, target)])
        if keep is not None:
            req.keep_groups = keep
        resp = await self._call("sampler", self.sampler.Edit, req, timeout)
        return from_raw(resp.faces[0].raw)

    async def measure_encoded(self, image: bytes, names: list[str], timeout: float) -> np.ndarray:
        """The conditions of one face sent as the user sent it (the attribute service decodes and fits it)."""
        resp = await self._call("attributes", self.attributes.Infer, pb.InferRequest(images=[pb.Image(encoded=image)]), timeout)
        return np.array([getattr(resp.conditions[0], n) for n in names], np.float32)

    # One result row per image, so that concurrent callers' images can share one call.
    async def _retouch_rows(self, images, timeout: float) -> list:
        resp = await self._call("critic", self.critic.Retouch, pb.RetouchRequest(images=raw(images), raw_output=True), timeout)
        return list(resp.faces)

    async def _score_rows(self, images, timeout: float) -> list:
        return list((await self._call("critic", self.critic.Score, pb.ScoreRequest(images=raw(images)), timeout)).scores)

    async def _infer_rows(self, images, timeout: float) -> list:
        resp = await self._call("attributes", self.attributes.Infer, pb.InferRequest(images=raw(images)), timeout)
        return list(resp.conditions)

    async def _classify_rows(self, images, timeout: float) -> list:
        resp = await self._call("filter", self.filter.Classify, pb.ClassifyRequest(images=raw(images)), timeout)
        return list(resp.p_female)

    async def _rows(self, service: str, send, images: np.ndarray, timeout: float) -> list:
        try:
            return await send(list(images), timeout)
        except TimeoutError:  # the request's deadline passed (in its call, or waiting to share one)
            raise self._late(service) from None

    async def retouch(self, images: np.ndarray, timeout: float) -> tuple[np.ndarray, list[Realness], list[Realness]]:
        faces = await self._rows("critic", self._retouch, images, timeout)
        return (np.stack([from_raw(f.image.raw) for f in faces]), [_realness(f.before) for f in faces],
                [_realness(f.after) for f in faces])

    async def score(self, images: np.ndarray, timeout: float) -> list[Realness]:
        return [_realness(s) for s in await self._rows("critic", self._score, images, timeout)]

    async def measure(self, images: np.ndarray, names: list[str], timeout: float) -> np.ndarray:
        rows = await self._rows("attributes", self._infer, images, timeout)
        return np.array([[getattr(c, n) for n in names] for c in rows], np.float32)

    async def p_female(self, images: np.ndarray, timeout: float) -> np.ndarray:
        return np.asarray(await self._rows("filter", self._classify, images, timeout), np.float32)
