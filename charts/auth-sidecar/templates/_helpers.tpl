{{/* Names, labels and the derived settings every template shares. */}}

{{- define "auth-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auth-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The metrics Service's name; 55 characters leave room for the suffix. */}}
{{- define "auth-sidecar.metricsName" -}}
{{- printf "%s-metrics" (include "auth-sidecar.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "auth-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auth-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auth-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "auth-sidecar.labels" -}}
helm.sh/chart: {{ include "auth-sidecar.chart" . }}
{{ include "auth-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "auth-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "auth-sidecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "auth-sidecar.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap that holds the policy: the one rendered here, or the operator's own. */}}
{{- define "auth-sidecar.configMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- include "auth-sidecar.fullname" . }}
{{- end }}
{{- end }}

{{- define "auth-sidecar.configMapKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}policy.yaml{{ end }}
{{- end }}

{{/* HOST:PORT for a listener; an IPv6 host gets brackets. */}}
{{- define "auth-sidecar.address" -}}
{{- $host := .host }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}

{{/* Long enough for the whole drain: the sidecar's drain delay, then its grace, plus a margin to exit. */}}
{{- define "auth-sidecar.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int .Values.server.drainDelaySeconds) (int .Values.server.graceSeconds) 5 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* `resources`, with memory requests and limits of server.workers x memoryPerWorkerMiB where not set there. */}}
{{- define "auth-sidecar.resources" -}}
{{- $resources := deepCopy .Values.resources }}
{{- $workers := int .Values.server.workers }}
{{- range $kind, $mib := dict "requests" .Values.memoryPerWorkerMiB.request "limits" .Values.memoryPerWorkerMiB.limit }}
{{- $amounts := get $resources $kind | default dict }}
{{- if not (hasKey $amounts "memory") }}
{{- $_ := set $amounts "memory" (printf "%dMi" (mul (int $mib) $workers)) }}
{{- end }}
{{- $_ := set $resources $kind $amounts }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* The PromQL label matchers that pick this release's series (the alerts' scope). */}}
{{- define "auth-sidecar.alertSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "auth-sidecar.metricsName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Refuse combinations that would install something that cannot work; run by every template. */}}
{{- define "auth-sidecar.validate" -}}
{{- if and .Values.policy .Values.existingConfigMap }}
{{- fail "auth-sidecar: set either policy or existingConfigMap, not both" }}
{{- end }}
{{- if not (or .Values.policy .Values.existingConfigMap) }}
{{- fail "auth-sidecar: no policy: set policy (inline YAML) or existingConfigMap" }}
{{- end }}
{{- if and .Values.rollOnConfigChange .Values.existingConfigMap }}
{{- fail "auth-sidecar: rollOnConfigChange needs an inline policy (the chart cannot see an existing ConfigMap's content); roll your pods when you change it, or rely on hot reload" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar") (not .Values.extraContainers) }}
{{- fail "auth-sidecar: mode sidecar needs your application in extraContainers" }}
{{- end }}
{{- if include "auth-sidecar.inAppPod" . }}
{{- if has (int .Values.app.port) (list (int .Values.ports.http) (int .Values.ports.admin)) }}
{{- fail (printf "auth-sidecar: app.port %d is a port of the sidecar (ports.http, ports.admin): the containers of a pod share its ports; give your application another" (int .Values.app.port)) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "inject" }}
{{- if not (and .Values.inject.deployment .Values.inject.selector) }}
{{- fail "auth-sidecar: mode inject needs inject.deployment (the name of your Deployment) and inject.selector (its pods' labels, usually its spec.selector.matchLabels)" }}
{{- end }}
{{- if .Values.extraContainers }}
{{- fail "auth-sidecar: mode inject adds the sidecar to your Deployment, whose containers stay its own: leave extraContainers empty" }}
{{- end }}
{{- if or .Values.autoscaling.enabled .Values.podDisruptionBudget.enabled }}
{{- fail "auth-sidecar: mode inject renders no Deployment: your Deployment's replicas, autoscaler and PodDisruptionBudget stay yours (set autoscaling.enabled and podDisruptionBudget.enabled to false)" }}
{{- end }}
{{- else if ne .Values.inject.output "objects" }}
{{- fail "auth-sidecar: inject.output: patch needs mode inject" }}
{{- end }}
{{- if .Values.trustedProxies }}
{{- if .Values.existingConfigMap }}
{{- fail "auth-sidecar: trustedProxies needs an inline policy (the chart cannot change an existing ConfigMap): write trusted_proxies in your policy" }}
{{- end }}
{{- if hasKey (fromYaml .Values.policy) "trusted_proxies" }}
{{- fail "auth-sidecar: set trusted_proxies in the policy or trustedProxies in the values, not both" }}
{{- end }}
{{- if not (deepEqual (get (fromYaml (include "auth-sidecar.policyText" .)) "trusted_proxies") .Values.trustedProxies) }}
{{- fail "auth-sidecar: trustedProxies can be added only to a policy that is valid YAML written as a block mapping (one top-level key per line)" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "auth-sidecar: ingress.enabled needs ingress.hosts (each a host and its paths)" }}
{{- end }}
{{- if and .Values.tls.clientCaSecretName (not .Values.tls.secretName) }}
{{- fail "auth-sidecar: tls.clientCaSecretName (client certificates) needs tls.secretName: the listener must speak TLS to ask for one" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) (or .Values.metricsService.enabled .Values.serviceMonitor.enabled) }}
{{- fail "auth-sidecar: networkPolicy.metricsFrom is empty, so only the node reaches the admin port and Prometheus could not scrape it: list your Prometheus pods in networkPolicy.metricsFrom (or set networkPolicy.enabled: false)" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- if not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) }}
{{- fail "auth-sidecar: podDisruptionBudget: set minAvailable or maxUnavailable, not both (set minAvailable: null)" }}
{{- end }}
{{- end }}
{{- end }}
