"""The benchmark harness behind `make bench`: wrk against nginx, Envoy jwt_authn and the sidecar (bench/README.md)."""
