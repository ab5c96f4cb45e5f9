# One image for every meterstream component; the command picks the role:
#   docker run IMAGE processor --metrics-port 9100 | sink | gateway | topics ensure | meters sync | ...
# Two stages: the wheel is built with the full source tree, the runtime stage holds only the installed
# package (no compilers, no sources, no pip cache).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY processor ./processor
COPY topics ./topics
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels meterstream \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 meterstream \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/meterstream meterstream
# Numeric, so Kubernetes' runAsNonRoot can verify it without resolving a user name.
USER 10001:10001
WORKDIR /home/meterstream
# 8080: gateway (METERSTREAM_GATEWAY_PORT); 9100: processor metrics (--metrics-port); 12111: stripe-emulator.
EXPOSE 8080 9100 12111
ENTRYPOINT ["meterstream"]
CMD ["--help"]
