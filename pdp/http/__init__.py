"""The PDP's HTTP face: the OpenID AuthZEN Authorization API 1.0 beside gRPC Decide.

* :mod:`pdp.http.authzen` — AuthZEN request ↔ :class:`~pdp.v1.decision_pb2.DecideRequest` and
  :class:`~pdp.decide.Decision` ↔ AuthZEN response; no HTTP in it.
* :mod:`pdp.http.app` — the ASGI application (Starlette): routes, limits, errors, caller identity.
* :mod:`pdp.http.face` — runs the application on uvicorn in the PDP process, beside gRPC.

Every evaluation reaches the same :class:`~pdp.decide.Decider` as gRPC: one pipeline.
"""
