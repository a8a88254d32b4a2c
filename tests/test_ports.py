"""The gRPC port probe: a live listener makes a port taken, a just-stopped server's lingering
connections (TIME_WAIT) do not — a service restarted on its own ports must come up."""

from __future__ import annotations

import socket

from services.core.grpc_server import port_is_free


def test_a_listening_port_is_taken_and_time_wait_leftovers_are_not():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's listeners do
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_is_free("127.0.0.1", port)

    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert port_is_free("127.0.0.1", port)
