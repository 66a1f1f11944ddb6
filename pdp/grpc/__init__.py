"""The PDP's gRPC face: one module per job.

* :mod:`pdp.grpc.status`: the one mapping from :class:`pdp.errors.PdpError` to gRPC status codes.
* :mod:`pdp.grpc.convert`: proto ↔ domain conversions (``Decision`` → ``DecideResponse``, ...).
* :mod:`pdp.grpc.servicer`: ``pdp.v1.DecisionService`` and its registration on a server.
* :mod:`pdp.grpc.health`: the OPA health monitor behind ``grpc.health.v1``.
* :mod:`pdp.grpc.tls`: server credentials (TLS, mTLS).
* :mod:`pdp.grpc.app`: assembly: settings → recorder, decider, services, port → :class:`PdpServer`.

A new service (e.g. approvals) gets a servicer module of its own and one line in
:func:`pdp.grpc.app.create_server`.
"""
