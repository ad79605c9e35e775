#!/usr/bin/env bash
# A CA and a serving certificate for prometheus-adapter.monitoring.svc (the name the API
# server's aggregation layer checks), written to the current directory:
#   ca.crt (-> each APIService's caBundle), tls.crt + tls.key (-> the adapter's Secret).
# Use your own CA or cert-manager instead where you have one. tests/kube/metrics_pipeline.py
# runs this script as it is.
set -euo pipefail
name="${ADAPTER_SERVICE:-prometheus-adapter}.${ADAPTER_NAMESPACE:-monitoring}.svc"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=prometheus-adapter-ca \
  -keyout ca.key -out ca.crt
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" > san.ext
openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout tls.key -out tls.csr
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile san.ext -out tls.crt
echo "wrote ca.crt, tls.crt and tls.key for $name"
