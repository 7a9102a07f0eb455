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

{{/* repository:tag, or with a digest repository@digest (the digest decides what runs); repository:tag@digest when
both are set, so that the tag shows which version the digest is. */}}
{{- define "auth-sidecar.image" -}}
{{- if and .Values.image.digest .Values.image.tag }}
{{- printf "%s:%s@%s" .Values.image.repository .Values.image.tag .Values.image.digest }}
{{- else if .Values.image.digest }}
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

{{/* `resources`, with CPU and memory requests and limits of server.workers x cpuPerWorkerMillicores and
memoryPerWorkerMiB where not set there: each worker is a process of its own. */}}
{{- define "auth-sidecar.resources" -}}
{{- $resources := deepCopy .Values.resources }}
{{- $workers := int .Values.server.workers }}
{{- $cpu := .Values.cpuPerWorkerMillicores }}
{{- range $kind, $mib := dict "requests" .Values.memoryPerWorkerMiB.request "limits" .Values.memoryPerWorkerMiB.limit }}
{{- $amounts := get $resources $kind | default dict }}
{{- if not (hasKey $amounts "memory") }}
{{- $_ := set $amounts "memory" (printf "%dMi" (mul (int $mib) $workers)) }}
{{- end }}
{{- $key := eq $kind "requests" | ternary "request" "limit" }}
{{- /* limit: null (Helm drops a key set to null) means no CPU limit */}}
{{- $milli := get $cpu $key }}
{{- if and (not (hasKey $amounts "cpu")) (hasKey $cpu $key) (not (kindIs "invalid" $milli)) }}
{{- $_ := set $amounts "cpu" (printf "%dm" (mul (int $milli) $workers)) }}
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
{{- /* A budget that allows no eviction blocks every node drain and cluster upgrade until someone deletes it. */}}
{{- if and .Values.podDisruptionBudget.enabled (ne .Values.mode "inject") }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $replicas := .Values.autoscaling.enabled | ternary .Values.autoscaling.minReplicas .Values.replicaCount | int }}
{{- if and (kindIs "invalid" $pdb.maxUnavailable) (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "string" $pdb.minAvailable)) }}
{{- if ge (int $pdb.minAvailable) $replicas }}
{{- fail (printf "auth-sidecar: podDisruptionBudget.minAvailable %d with %d replica(s): no pod may ever be evicted, so every node drain blocks; run more replicas (replicaCount, autoscaling.minReplicas) or set a lower minAvailable" (int $pdb.minAvailable) $replicas) }}
{{- end }}
{{- end }}
{{- if and (kindIs "invalid" $pdb.maxUnavailable) (eq (toString $pdb.minAvailable) "100%") }}
{{- fail "auth-sidecar: podDisruptionBudget.minAvailable 100%: no pod may ever be evicted, so every node drain blocks; set a lower minAvailable" }}
{{- end }}
{{- if and (not (kindIs "invalid" $pdb.maxUnavailable)) (has (toString $pdb.maxUnavailable) (list "0" "0%")) }}
{{- fail "auth-sidecar: podDisruptionBudget.maxUnavailable 0: no pod may ever be evicted, so every node drain blocks; set 1 or more" }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $drain := addf .Values.server.drainDelaySeconds .Values.server.graceSeconds }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "auth-sidecar: terminationGracePeriodSeconds %v is shorter than the drain (server.drainDelaySeconds + server.graceSeconds = %v s): the kubelet would kill the sidecar with requests in flight; set at least %v plus a few seconds to exit (or leave it null: the chart computes it)" .Values.terminationGracePeriodSeconds $drain $drain) }}
{{- end }}
{{- end }}
{{- with .Values.ingress }}{{ if .enabled }}
{{- $hosts := list }}
{{- range .hosts }}{{ $hosts = append $hosts .host }}{{ end }}
{{- range .tls }}{{ range .hosts }}
{{- if not (has . $hosts) }}
{{- fail (printf "auth-sidecar: ingress.tls names %s, which is not among ingress.hosts (%s): the certificate would be for a host the Ingress does not serve; fix the typo or add the host" . (join ", " $hosts)) }}
{{- end }}
{{- end }}{{ end }}
{{- end }}{{ end }}
{{- /* A HorizontalPodAutoscaler on CPU utilization needs a CPU request on every container of the pod, or it
cannot compute one and never scales (FailedGetResourceMetric). */}}
{{- if and .Values.autoscaling.enabled (not (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage)) }}
{{- range .Values.extraContainers }}
{{- if not (and .resources .resources.requests .resources.requests.cpu) }}
{{- fail (printf "auth-sidecar: autoscaling on CPU needs a CPU request on every container of the pod: %s has none (set its resources.requests.cpu, or autoscaling.targetCPUUtilizationPercentage: null)" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
