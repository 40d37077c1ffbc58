# Airflow image for docker-compose and production: the official image plus this project's requirements.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt constraints.txt /opt/llmd-bench/
RUN pip install --no-cache-dir -r /opt/llmd-bench/requirements.txt -c /opt/llmd-bench/constraints.txt \
 && pip check
