# One image for every meterstream component; the command picks the role (processor, sink, gateway, ...).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY processor ./processor
COPY topics ./topics
RUN pip install --no-cache-dir . && useradd --system --uid 10001 meterstream
USER meterstream
ENTRYPOINT ["meterstream"]
CMD ["--help"]
