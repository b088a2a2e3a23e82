{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. Component suffixes ("-gateway", "-trigger-api") are appended to it, so it is
cut to 50 characters to leave room for them.
*/}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels common to every object of the release.
*/}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- end }}

{{/*
Per-component names, labels and selectors. Called with (dict "ctx" $ "component" "gateway").
The component is "gateway" or "trigger-api".
*/}}
{{- define "herald.componentName" -}}
{{- printf "%s-%s" (include "herald.fullname" .ctx) .component }}
{{- end }}

{{- define "herald.componentLabels" -}}
{{ include "herald.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret the chart renders (apps file, Redis URL, generated credentials), unless both the Redis URL
and the apps file come from existing Secrets.
*/}}
{{- define "herald.secretName" -}}
{{- include "herald.fullname" . }}
{{- end }}

{{- define "herald.chartSecretNeeded" -}}
{{- if or (not .Values.redis.existingSecret) (not .Values.apps.existingSecret) }}true{{ end }}
{{- end }}

{{/*
"true" when the release runs its own Redis: no URL, no existing Secret, and the switch on.
*/}}
{{- define "herald.redisInternal" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) .Values.redis.internal.enabled }}true{{ end }}
{{- end }}

{{/*
"true" when the release serves the generated default app (no apps given).
*/}}
{{- define "herald.appsGenerated" -}}
{{- if and (not .Values.apps.existingSecret) (not .Values.apps.apps) }}true{{ end }}
{{- end }}

{{/*
Generated credentials as JSON: the default app's key and secret, the in-chart Redis' password. Made
once per render (cached in .Values, which every template of the chart shares, so the Secret, the
checksum and NOTES.txt agree) and taken from the release's existing Secret on upgrades.
*/}}
{{- define "herald.generated" -}}
{{- if not (index .Values "herald-generated") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "herald.secretName" .) | default dict }}
{{- $old := get $existing "data" | default dict }}
{{- $gen := dict }}
{{- range $field, $length := dict "default-app-key" 20 "default-app-secret" 32 "redis-password" 32 }}
{{- if hasKey $old $field }}
{{- $_ := set $gen $field (get $old $field | b64dec) }}
{{- else }}
{{- $_ := set $gen $field (randAlphaNum $length | lower) }}
{{- end }}
{{- end }}
{{- $_ := set .Values "herald-generated" $gen }}
{{- end }}
{{- index .Values "herald-generated" | toJson }}
{{- end }}

{{- define "herald.redisInternalName" -}}
{{- include "herald.componentName" (dict "ctx" . "component" "redis") }}
{{- end }}

{{/*
The Redis URL stored in the chart's Secret: the user's, or the in-chart Redis'.
*/}}
{{- define "herald.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else }}
{{- $gen := include "herald.generated" . | fromJson }}
{{- printf "redis://:%s@%s:6379/0" (get $gen "redis-password") (include "herald.redisInternalName" .) }}
{{- end }}
{{- end }}

{{- define "herald.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (include "herald.secretName" .) }}
{{- end }}

{{- define "herald.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{- define "herald.appsSecretName" -}}
{{- .Values.apps.existingSecret | default (include "herald.secretName" .) }}
{{- end }}

{{- define "herald.appsSecretKey" -}}
{{- if .Values.apps.existingSecret }}{{ .Values.apps.existingSecretKey }}{{ else }}apps.yaml{{ end }}
{{- end }}

{{/*
The apps file rendered from .Values.apps.apps, or the generated default app.
*/}}
{{- define "herald.appsFile" -}}
{{- if include "herald.appsGenerated" . }}
{{- $gen := include "herald.generated" . | fromJson }}
{{- toYaml (dict "apps" (list (dict "id" "1" "key" (get $gen "default-app-key") "secret" (get $gen "default-app-secret")))) }}
{{- else }}
{{- toYaml (dict "apps" .Values.apps.apps) }}
{{- end }}
{{- end }}

{{/*
Where a Redis TLS Secret (redis.tls) is mounted.
*/}}
{{- define "herald.redisTlsDir" -}}
/etc/herald/redis-tls
{{- end }}

{{/*
Directory the apps file is mounted in; the file is always called apps.yaml there (Herald parses YAML,
a superset of JSON, for any name not ending in .json).
*/}}
{{- define "herald.appsDir" -}}
/etc/herald/apps
{{- end }}

{{/*
Refuse to render a release Herald could not run safely with. Included by every workload.
*/}}
{{- define "herald.validate" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) (not .Values.redis.internal.enabled) }}
{{- fail "redis.url or redis.existingSecret is required when redis.internal.enabled is false: gateways and the trigger API share state and messages only through Redis" }}
{{- end }}
{{- with .Values.redis.tls }}
{{- if .enabled }}
{{- if not .secretName }}
{{- fail "redis.tls.secretName is required when redis.tls.enabled is true" }}
{{- end }}
{{- if ne (empty .certKey) (empty .keyKey) }}
{{- fail "redis.tls.certKey and redis.tls.keyKey go together (a client certificate and its key)" }}
{{- end }}
{{- if include "herald.redisInternal" $ }}
{{- fail "redis.tls is for an external rediss:// Redis (redis.url or redis.existingSecret); the in-chart Redis has no TLS" }}
{{- end }}
{{- if and $.Values.redis.url (not $.Values.redis.existingSecret) (not (hasPrefix "rediss://" $.Values.redis.url)) (not (hasPrefix "rediss+sentinel://" $.Values.redis.url)) }}
{{- fail "redis.tls.enabled needs a rediss:// or rediss+sentinel:// redis.url" }}
{{- end }}
{{- end }}
{{- end }}
{{- if not .Values.apps.existingSecret }}
{{- range $i, $app := .Values.apps.apps }}
{{- if not (kindIs "map" $app) }}
{{- fail (printf "apps.apps[%d] must be a mapping with id, key and secret" $i) }}
{{- end }}
{{- range $field := list "id" "key" "secret" }}
{{- if not (get $app $field) }}
{{- fail (printf "apps.apps[%d].%s is required" $i $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /*
Shutdown budget, from herald/server.py: preStop sleep, then the drain (gateways only: the API holds
no sockets), then uvicorn's graceful shutdown (timeout max(5, int(drainSeconds) + 5)), plus 2 s to
close Redis and exit.
*/}}
{{- $drain := float64 .Values.drainSeconds }}
{{- $uvicorn := float64 (max 5 (add (int $drain) 5)) }}
{{- range $key := list "gateway" "triggerApi" }}
{{- $c := index $.Values $key }}
{{- $ownDrain := ternary $drain 0.0 (eq $key "gateway") }}
{{- $need := addf (float64 ($c.preStopSleepSeconds | default 0)) $ownDrain $uvicorn 2 }}
{{- if lt (float64 $c.terminationGracePeriodSeconds) $need }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must be at least %v (preStopSleepSeconds %v + drain %v + uvicorn's shutdown timeout %v + 2), or pods are killed mid-drain" $key $c.terminationGracePeriodSeconds $need (float64 ($c.preStopSleepSeconds | default 0)) $ownDrain $uvicorn) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Default affinity: prefer spreading a component's pods across nodes.
*/}}
{{- define "herald.defaultAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "herald.selectorLabels" . | nindent 12 }}
{{- end }}

{{/*
Environment shared by both workloads. Called with (dict "ctx" $ "values" <component values>).
*/}}
{{- define "herald.env" -}}
{{- $ := .ctx -}}
- name: HERALD_PORT
  value: {{ $.Values.containerPort | quote }}
- name: HERALD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "herald.redisSecretName" $ }}
      key: {{ include "herald.redisSecretKey" $ }}
- name: HERALD_APPS_FILE
  value: {{ printf "%s/apps.yaml" (include "herald.appsDir" $) | quote }}
- name: HERALD_REDIS_PREFIX
  value: {{ $.Values.redisPrefix | quote }}
- name: HERALD_NODE_LEASE
  value: {{ $.Values.nodeLease | quote }}
- name: HERALD_REAPER_INTERVAL
  value: {{ $.Values.reaperInterval | quote }}
- name: HERALD_DRAIN_SECONDS
  value: {{ $.Values.drainSeconds | quote }}
- name: HERALD_ACTIVITY_TIMEOUT
  value: {{ $.Values.activityTimeout | quote }}
- name: HERALD_PONG_TIMEOUT
  value: {{ $.Values.pongTimeout | quote }}
- name: HERALD_LOG_LEVEL
  value: {{ $.Values.logLevel | quote }}
{{- if not (kindIs "invalid" $.Values.metricsPort) }}
- name: HERALD_METRICS_PORT
  value: {{ $.Values.metricsPort | quote }}
{{- end }}
{{- if $.Values.redis.tls.enabled }}
{{- $dir := include "herald.redisTlsDir" $ }}
{{- with $.Values.redis.tls.caKey }}
- name: HERALD_REDIS_TLS_CA_FILE
  value: {{ printf "%s/%s" $dir . | quote }}
{{- end }}
{{- with $.Values.redis.tls.certKey }}
- name: HERALD_REDIS_TLS_CERT_FILE
  value: {{ printf "%s/%s" $dir . | quote }}
{{- end }}
{{- with $.Values.redis.tls.keyKey }}
- name: HERALD_REDIS_TLS_KEY_FILE
  value: {{ printf "%s/%s" $dir . | quote }}
{{- end }}
{{- end }}
{{- $workers := .values.webhookWorkers }}
{{- if kindIs "invalid" $workers }}{{ $workers = $.Values.webhookWorkers }}{{ end }}
{{- if not (kindIs "invalid" $workers) }}
- name: HERALD_WEBHOOK_WORKERS
  value: {{ $workers | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
