FROM python:3.12-slim
WORKDIR /srv
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt
COPY . .
HEALTHCHECK --interval=30s CMD ["curl", "-f", "http://localhost:8000/health"]
CMD python -m app
