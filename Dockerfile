# The PDP image: `pdp serve` in front of an OPA sidecar container (docker-compose.yml, deploy/k8s/).
# It is the default (last) stage; the `bundler` stage is for docker-compose.yml's policy-bundle service.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY pdp ./pdp
RUN python -m venv /opt/pdp \
 && /opt/pdp/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM python:3.11-slim AS pdp
COPY --from=build /opt/pdp /opt/pdp
# The policy travels with the image: the compose stack signs it into the bundle its OPA serves.
COPY rego /opt/pdp/policy
# Never root: the PDP needs no privileges, only its port, its key and log directories, and the
# directory of OPA's unix socket (0700, its user only: a shared volume starts from this directory),
# and compose's signed bundle directory (/var/lib/pdp-bundle, the same way).
RUN useradd --system --uid 10001 --no-create-home pdp \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/pdp /run/opa /var/lib/pdp-bundle
USER 10001:10001
ENV PATH=/opt/pdp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PDP_LISTEN=0.0.0.0:50051 \
    PDP_OPA_URL=unix:///run/opa/opa.sock \
    PDP_KEY_DIR=/var/lib/pdp/keys \
    PDP_LOG_DIR=/var/lib/pdp/log
EXPOSE 50051
ENTRYPOINT ["pdp"]
CMD ["serve"]

# docker-compose.yml's policy-bundle service: the PDP image plus the opa binary of the OPA image
# that serves the bundle, for `opa build --signing-key` (bundles.build). The PDP image has no opa.
FROM pdp AS bundler
COPY --from=openpolicyagent/opa:1.22.2 /opa /usr/local/bin/opa

FROM pdp
