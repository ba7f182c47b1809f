"""Envoy's bootstrap, one part per module; gateway/render.py assembles them in one place.

    listeners.py      the public edge, the internal gRPC listener, the containers' stats one
    filters.py        the public listener's HTTP filter chain, in order
    auth.py           jwt_authn (one provider: the trust service) and the DPoP scheme checks
    routes.py         per-method routes (REST and gRPC), retries, the internal routes
    rate_limits.py    the token buckets (per client, citizen, route, anonymous, global)
    local_replies.py  Envoy's own answers in the services' error shape
    clusters.py       one cluster per service (health checks, breakers, outlier detection)
    tls.py            mutual TLS to the services and on the internal listener
    tracing.py        the OpenTelemetry tracer and its collector
    overload.py       the overload manager (connections, heap) and the memory allocator
    common.py         type URLs, header names and the small shapes the others share

Every builder is a pure function of its arguments (no environment, no files); gateway/
README.md explains the decisions behind the values.
"""
