# One image for every Orderflow process (web, worker, beat, flower, sandbox); compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --create-home --uid 1000 orderflow
USER orderflow

EXPOSE 8000
CMD ["gunicorn", "project.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "2", "--graceful-timeout", "20", "--forwarded-allow-ips", "", "--access-logfile", "-"]
