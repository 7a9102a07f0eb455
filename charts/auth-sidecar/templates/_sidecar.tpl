{{/* The sidecar container and its volumes: one definition for the Deployment (gateway, sidecar) and the inject patch. */}}

{{/* "true" when the sidecar runs in the pod of an application (mode sidecar or inject): a native sidecar there. */}}
{{- define "auth-sidecar.inAppPod" -}}
{{- if has .Values.mode (list "sidecar" "inject") }}true{{ end }}
{{- end }}

{{/* "true" unless this render is the inject patch alone (inject.output: patch): every other object's guard. */}}
{{- define "auth-sidecar.objects" -}}
{{- if not (and (eq .Values.mode "inject") (eq .Values.inject.output "patch")) }}true{{ end }}
{{- end }}

{{/* The labels of the pods the sidecar runs in: the chart's own, or (inject) those of your Deployment's pods. */}}
{{- define "auth-sidecar.podSelector" -}}
{{- if eq .Values.mode "inject" }}
{{- toYaml .Values.inject.selector }}
{{- else }}
{{- include "auth-sidecar.selectorLabels" . }}
{{- end }}
{{- end }}

{{/* A sidecar port for Services and NetworkPolicies: by name in the chart's own pods; by number in yours (inject),
where your application's container may name a port `http` too. Call with (dict "root" . "port" "http"). */}}
{{- define "auth-sidecar.portRef" -}}
{{- if eq .root.Values.mode "inject" }}
{{- int (get .root.Values.ports .port) }}
{{- else }}
{{- .port }}
{{- end }}
{{- end }}

{{/* The policy file as mounted: `policy` as written (so FILE:LINE errors point into your values), with
`trustedProxies` appended as the policy's `trusted_proxies` when set. */}}
{{- define "auth-sidecar.policyText" -}}
{{- .Values.policy }}
{{- with .Values.trustedProxies }}
{{- if not (hasSuffix "\n" $.Values.policy) }}{{ "\n" }}{{ end -}}
# from the chart value trustedProxies: the peers (your ingress) whose X-Forwarded-For names the client
trusted_proxies: {{ toJson . }}
{{ end }}
{{- end }}

{{/* The sidecar container's name, and the prefix of its volumes' names. In inject mode the pod is yours and the
patch merges by name, so they are distinctive there: `auth-sidecar`, `auth-sidecar-policy`, ... never replace a
container or volume of yours (a volume `policy` of yours would otherwise be silently merged with the sidecar's). */}}
{{- define "auth-sidecar.containerName" -}}
{{- eq .Values.mode "inject" | ternary "auth-sidecar" "sidecar" }}
{{- end }}
{{- define "auth-sidecar.volumePrefix" -}}
{{- if eq .Values.mode "inject" }}auth-sidecar-{{ end }}
{{- end }}

{{- define "auth-sidecar.tlsDir" -}}/etc/sidecar-tls{{- end }}
{{- define "auth-sidecar.clientCaDir" -}}/etc/sidecar-tls-client-ca{{- end }}

{{- define "auth-sidecar.container" -}}
{{- $multiproc := gt (int .Values.server.workers) 1 -}}
{{- $v := include "auth-sidecar.volumePrefix" . -}}
- name: {{ include "auth-sidecar.containerName" . }}
  image: {{ include "auth-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if include "auth-sidecar.inAppPod" . }}
  # A native sidecar (Kubernetes >= 1.29): started before your application's containers, stopped after them.
  restartPolicy: Always
  {{- end }}
  command: [sidecar, serve]
  args:
    - --config=/etc/sidecar/policy.yaml
    - --listen={{ include "auth-sidecar.address" (dict "host" .Values.server.bindAddress "port" .Values.ports.http) }}
    - --admin-listen={{ include "auth-sidecar.address" (dict "host" .Values.server.bindAddress "port" .Values.ports.admin) }}
    - --log-level={{ .Values.server.logLevel }}
    - --log-format={{ .Values.server.logFormat }}
    - --drain-delay={{ .Values.server.drainDelaySeconds }}
    - --grace={{ .Values.server.graceSeconds }}
    - --max-connections={{ int .Values.server.maxConnections }}
    {{- if $multiproc }}
    - --workers={{ .Values.server.workers }}
    {{- end }}
    {{- if .Values.server.audit }}
    - --audit
    {{- end }}
    {{- with .Values.server.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or $multiproc (include "auth-sidecar.inAppPod" .) .Values.env .Values.rateLimitStore.existingSecret .Values.tls.secretName }}
  env:
    {{- if include "auth-sidecar.inAppPod" . }}
    - name: APP_UPSTREAM
      value: {{ printf "http://127.0.0.1:%d" (int .Values.app.port) | quote }}
    {{- end }}
    {{- if $multiproc }}
    - name: PROMETHEUS_MULTIPROC_DIR
      value: /tmp/sidecar-metrics
    {{- end }}
    {{- if .Values.tls.secretName }}
    # The proxy port speaks HTTPS with the certificate of the Secret tls.secretName (read again when it changes).
    - name: SIDECAR_TLS_CERT
      value: {{ include "auth-sidecar.tlsDir" . }}/tls.crt
    - name: SIDECAR_TLS_KEY
      value: {{ include "auth-sidecar.tlsDir" . }}/tls.key
    {{- if .Values.tls.clientCaSecretName }}
    - name: SIDECAR_TLS_CLIENT_CA
      value: {{ include "auth-sidecar.clientCaDir" . }}/{{ .Values.tls.clientCaKey }}
    {{- end }}
    {{- end }}
    {{- with .Values.rateLimitStore.existingSecret }}
    # the policy's rate_limit_store: { url: "${REDIS_URL}" } (shared rate limits)
    - name: REDIS_URL
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $.Values.rateLimitStore.urlKey }}
    {{- end }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- if or .Values.existingSecret .Values.envFrom }}
  envFrom:
    {{- with .Values.existingSecret }}
    - secretRef:
        name: {{ . }}
    {{- end }}
    {{- with .Values.envFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  ports:
    - name: http
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
    - name: admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  # The probes call the admin port, its own listener: plain HTTP whether or not the proxy port speaks TLS.
  livenessProbe:
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  {{- with .Values.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- include "auth-sidecar.resources" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    # Directory mounts, never subPath: the kubelet updates them in place (a `..data` symlink swap), which is what
    # hot reload (the policy) and the certificate reload (a Secret that cert-manager renews) watch for.
    - name: {{ $v }}policy
      mountPath: /etc/sidecar
      readOnly: true
    {{- if .Values.tls.secretName }}
    - name: {{ $v }}tls
      mountPath: {{ include "auth-sidecar.tlsDir" . }}
      readOnly: true
    {{- if .Values.tls.clientCaSecretName }}
    - name: {{ $v }}tls-client-ca
      mountPath: {{ include "auth-sidecar.clientCaDir" . }}
      readOnly: true
    {{- end }}
    {{- end }}
    {{- if $multiproc }}
    - name: {{ $v }}metrics
      mountPath: /tmp/sidecar-metrics
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "auth-sidecar.volumes" -}}
{{- $v := include "auth-sidecar.volumePrefix" . -}}
- name: {{ $v }}policy
  configMap:
    name: {{ include "auth-sidecar.configMapName" . }}
    items:
      - key: {{ include "auth-sidecar.configMapKey" . }}
        path: policy.yaml
{{- if .Values.tls.secretName }}
- name: {{ $v }}tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if .Values.tls.clientCaSecretName }}
- name: {{ $v }}tls-client-ca
  secret:
    secretName: {{ .Values.tls.clientCaSecretName }}
    items:
      - key: {{ .Values.tls.clientCaKey }}
        path: {{ .Values.tls.clientCaKey }}
{{- end }}
{{- end }}
{{- if gt (int .Values.server.workers) 1 }}
- name: {{ $v }}metrics
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
