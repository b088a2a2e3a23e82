{{/*
Deployment and Service shared by both workloads. Called with
  (dict "ctx" $ "component" "gateway" "key" "gateway")          -> `herald gateway`
  (dict "ctx" $ "component" "trigger-api" "key" "triggerApi")   -> `herald trigger-api`
`$c` is always the component's values block (.Values.gateway or .Values.triggerApi).
*/}}
{{- define "herald.deployment" -}}
{{- $ := .ctx }}
{{- $c := index $.Values .key }}
{{- $sel := dict "ctx" $ "component" .component }}
{{- include "herald.validate" $ }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "herald.componentName" $sel }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "herald.componentLabels" $sel | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 10
  minReadySeconds: {{ $c.minReadySeconds }}
  {{- with $c.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "herald.selectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "herald.componentLabels" $sel | nindent 8 }}
        {{- with (merge (dict) $c.podLabels $.Values.podLabels) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- if include "herald.chartSecretNeeded" $ }}
        # Herald reads the apps file and Redis URL at start-up: roll the pods when they change.
        checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
        {{- end }}
        {{- with (merge (dict) $c.podAnnotations $.Values.podAnnotations) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "herald.serviceAccountName" $ }}
      automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # SIGTERM starts Herald's own drain (readiness false, 4100 for new handshakes, 4200 closes spread
      # over drainSeconds), so no preStop hook is required; this grace period must outlast preStop +
      # drain + uvicorn's shutdown, or the kubelet's SIGKILL drops sockets at once (checked at render).
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with ($c.nodeSelector | default $.Values.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with ($c.tolerations | default $.Values.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        {{- if $c.affinity }}
        {{- toYaml $c.affinity | nindent 8 }}
        {{- else }}
        {{- include "herald.defaultAffinity" $sel | nindent 8 }}
        {{- end }}
      {{- with $c.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "herald.image" $ | quote }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          args:
            - {{ .component }}
            {{- range $c.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $.Values.containerPort }}
              protocol: TCP
            {{- if not (kindIs "invalid" $.Values.metricsPort) }}
            - name: metrics
              containerPort: {{ $.Values.metricsPort }}
              protocol: TCP
            {{- end }}
          env:
            {{- include "herald.env" (dict "ctx" $ "values" $c) | nindent 12 }}
          {{- with $c.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.startupProbe }}
          startupProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if $c.preStopSleepSeconds }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $c.preStopSleepSeconds | quote }}]
          {{- end }}
          {{- with $c.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $.Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: apps
              mountPath: {{ include "herald.appsDir" $ }}
              readOnly: true
            # The root filesystem is read-only; Python's tempfile gets a small scratch directory.
            - name: tmp
              mountPath: /tmp
            {{- if $.Values.redis.tls.enabled }}
            - name: redis-tls
              mountPath: {{ include "herald.redisTlsDir" $ }}
              readOnly: true
            {{- end }}
            {{- with $c.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: apps
          secret:
            secretName: {{ include "herald.appsSecretName" $ }}
            defaultMode: 0440
            items:
              - key: {{ include "herald.appsSecretKey" $ }}
                path: apps.yaml
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $.Values.redis.tls.enabled }}
        - name: redis-tls
          secret:
            secretName: {{ $.Values.redis.tls.secretName }}
            defaultMode: 0440
            items:
              {{- range $key := list $.Values.redis.tls.caKey $.Values.redis.tls.certKey $.Values.redis.tls.keyKey }}
              {{- if $key }}
              - key: {{ $key }}
                path: {{ $key }}
              {{- end }}
              {{- end }}
        {{- end }}
        {{- with $c.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}

{{- define "herald.service" -}}
{{- $ := .ctx }}
{{- $c := index $.Values .key }}
{{- $sel := dict "ctx" $ "component" .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "herald.componentName" $sel }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "herald.componentLabels" $sel | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $c.service.type }}
  {{- if and (has $c.service.type (list "NodePort" "LoadBalancer")) $c.service.externalTrafficPolicy }}
  externalTrafficPolicy: {{ $c.service.externalTrafficPolicy }}
  {{- end }}
  {{- if and (eq $c.service.type "LoadBalancer") $c.service.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml $c.service.loadBalancerSourceRanges | nindent 4 }}
  {{- end }}
  selector:
    {{- include "herald.selectorLabels" $sel | nindent 4 }}
  ports:
    - name: http
      port: {{ $c.service.port }}
      targetPort: http
      protocol: TCP
      {{- if and (has $c.service.type (list "NodePort" "LoadBalancer")) $c.service.nodePort }}
      nodePort: {{ $c.service.nodePort }}
      {{- end }}
    {{- if not (kindIs "invalid" $.Values.metricsPort) }}
    - name: metrics
      port: {{ $.Values.metricsPort }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end }}
