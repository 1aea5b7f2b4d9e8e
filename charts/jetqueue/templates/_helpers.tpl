{{/* Chart name. */}}
{{- define "jetqueue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every resource: <release>-jetqueue unless the release already says jetqueue. */}}
{{- define "jetqueue.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Standard labels; pass (dict "ctx" $ "component" "producer"). */}}
{{- define "jetqueue.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: jetqueue
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "jetqueue.selectorLabels" . }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "jetqueue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetqueue.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Image of one component: (dict "ctx" $ "component" "producer"); by digest when image.digest.<component> is set. */}}
{{- define "jetqueue.image" -}}
{{- $override := index (.ctx.Values.image.overrides | default dict) .component | default "" -}}
{{- $digest := index (.ctx.Values.image.digest | default dict) .component | default "" -}}
{{- if $override -}}
{{- $override -}}
{{- else if $digest -}}
{{- printf "%s-%s:%s@%s" .ctx.Values.image.repository .component (default .ctx.Chart.AppVersion .ctx.Values.image.tag) $digest -}}
{{- else -}}
{{- printf "%s-%s:%s" .ctx.Values.image.repository .component (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "jetqueue.natsSecret" -}}
{{- default (printf "%s-nats" (include "jetqueue.fullname" .)) .Values.nats.existingSecret -}}
{{- end -}}

{{- define "jetqueue.serviceAccount" -}}
{{- printf "%s-%s" (include "jetqueue.fullname" .ctx) .component -}}
{{- end -}}

{{/* Namespaces the operator serves. */}}
{{- define "jetqueue.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join "," .Values.operator.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* One queue's JobQueue spec: queueDefaults deep-merged under the queue's own fields. */}}
{{- define "jetqueue.queueSpec" -}}
{{- $spec := mustMergeOverwrite (deepCopy .ctx.Values.queueDefaults) (omit .queue "name") -}}
{{- if not (dig "worker" "image" "" $spec) -}}
{{- $_ := set $spec.worker "image" (include "jetqueue.image" (dict "ctx" .ctx "component" "worker")) -}}
{{- end -}}
{{- toYaml $spec -}}
{{- end -}}

{{/* The catalog file (libs/jetqueue catalog format) the producer and monitor read: the same queues. */}}
{{- define "jetqueue.catalog" -}}
{{- $queues := list -}}
{{- range .Values.queues -}}
{{- $s := fromYaml (include "jetqueue.queueSpec" (dict "ctx" $ "queue" .)) -}}
{{- $q := dict "name" .name -}}
{{- $_ := set $q "display_name" (dig "displayName" "" $s) -}}
{{- $_ := set $q "display_name_en" (dig "displayNameEn" "" $s) -}}
{{- $_ := set $q "priority" (dig "priority" 3 $s) -}}
{{- $_ := set $q "concurrency" (dig "worker" "concurrency" 10 $s) -}}
{{- $_ := set $q "attempts" (dig "jobs" "attempts" 3 $s) -}}
{{- $_ := set $q "backoff" (dict "type" (dig "jobs" "backoff" "type" "exponential" $s) "delay_ms" (dig "jobs" "backoff" "delayMs" 1000 $s)) -}}
{{- with (dig "jobs" "timeoutMs" nil $s) }}{{ $_ := set $q "timeout_ms" . }}{{ end -}}
{{- $_ := set $q "retention_s" (dig "jobs" "retentionSeconds" 3600 $s) -}}
{{- $_ := set $q "failed_retention_s" (dig "jobs" "failedRetentionSeconds" 604800 $s) -}}
{{- $_ := set $q "priority_levels" (dig "jobs" "priorityLevels" 3 $s) -}}
{{- $_ := set $q "ack_wait_s" (dig "jobs" "ackWaitSeconds" 30 $s) -}}
{{- $_ := set $q "max_stalled" (dig "jobs" "maxStalled" 2 $s) -}}
{{- $_ := set $q "max_age_s" (dig "stream" "maxAgeSeconds" 1209600 $s) -}}
{{- $_ := set $q "duplicate_window_s" (dig "stream" "duplicateWindowSeconds" 120 $s) -}}
{{- with (dig "stream" "replicas" nil $s) }}{{ $_ := set $q "replicas" . }}{{ end -}}
{{- with (dig "jobs" "names" nil $s) }}{{ $_ := set $q "job_names" . }}{{ end -}}
{{- $queues = append $queues $q -}}
{{- end -}}
{{- $catalog := dict "queues" $queues "schedules" .Values.schedules -}}
{{- with .Values.alerts }}{{ $_ := set $catalog "alerts" . }}{{ end -}}
{{- toYaml $catalog -}}
{{- end -}}

{{/* Environment of every jetqueue container the chart runs: replicas and the NATS credentials and TLS files. */}}
{{- define "jetqueue.natsEnv" -}}
# The one replica setting of every stream and bucket (never lowers an existing stream).
- name: JETQUEUE_REPLICAS
  value: {{ .Values.jetstream.replicas | quote }}
{{- if .Values.nats.credsSecret }}
- name: JETQUEUE_NATS_CREDS
  value: /etc/jetqueue-nats/nats.creds
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: JETQUEUE_NATS_TLS_CA
  value: /etc/jetqueue-nats-tls/ca.crt
- name: JETQUEUE_NATS_TLS_CERT
  value: /etc/jetqueue-nats-tls/tls.crt
- name: JETQUEUE_NATS_TLS_KEY
  value: /etc/jetqueue-nats-tls/tls.key
{{- end }}
{{- end -}}

{{/* Environment of the producer and monitor: the catalog file, who provisions, and the NATS settings. */}}
{{- define "jetqueue.commonEnv" -}}
- name: JETQUEUE_CATALOG
  value: /etc/jetqueue/catalog.yaml
{{- if .Values.operator.enabled }}
# The operator owns streams and consumers (storage, size caps); nobody else provisions them.
- name: JETQUEUE_PROVISION
  value: "false"
{{- end }}
{{ include "jetqueue.natsEnv" . }}
{{- end -}}

{{/* Volumes of the NATS credentials and TLS Secrets (any component). */}}
{{- define "jetqueue.natsVolumes" -}}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credsSecret }}
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "jetqueue.natsMounts" -}}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  mountPath: /etc/jetqueue-nats
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  mountPath: /etc/jetqueue-nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "jetqueue.commonVolumes" -}}
- name: catalog
  configMap:
    name: {{ include "jetqueue.fullname" . }}-catalog
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- include "jetqueue.natsVolumes" . }}
{{- end -}}

{{- define "jetqueue.commonMounts" -}}
- name: catalog
  mountPath: /etc/jetqueue
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- include "jetqueue.natsMounts" . }}
{{- end -}}

{{/* Where a component's pods run: node selector, affinity, tolerations and topology spread; (dict "ctx" $ "component" "producer"). */}}
{{- define "jetqueue.scheduling" -}}
{{- $v := index .ctx.Values .component -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else if .ctx.Values.topologySpread.enabled }}
{{- /* Zones first, then hosts: a drain or a zone outage never takes every replica of a component. */}}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "jetqueue.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Image pull secrets of a pod spec. */}}
{{- define "jetqueue.pullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Runbook link of one alert: (dict "ctx" $ "alert" "JetqueueLagHigh"); the anchors are docs/operations.md's headings. */}}
{{- define "jetqueue.runbookUrl" -}}
{{- printf "%s#%s" .ctx.Values.metrics.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end -}}

{{/* Refuse values that would run insecurely or cannot work; devMode relaxes the first kind. Included by NOTES.txt and every Deployment. */}}
{{- define "jetqueue.validate" -}}
{{- if hasKey .Values.nats "streamReplicas" }}
{{- fail "nats.streamReplicas was replaced by jetstream.replicas (one setting for every stream and bucket)" }}
{{- end }}
{{- if hasKey (.Values.queueDefaults.stream | default dict) "replicas" }}
{{- fail "queueDefaults.stream.replicas was replaced by jetstream.replicas (a queue may still set its own stream.replicas)" }}
{{- end }}
{{- $replicas := int .Values.jetstream.replicas }}
{{- if or (lt $replicas 1) (gt $replicas 5) }}
{{- fail "jetstream.replicas must be 1 to 5 (3 on a production NATS cluster)" }}
{{- end }}
{{- if and .Values.jetstream.servers (gt $replicas (int .Values.jetstream.servers)) }}
{{- fail (printf "jetstream.replicas=%d needs at least %d JetStream servers; jetstream.servers says %d" $replicas $replicas (int .Values.jetstream.servers)) }}
{{- end }}
{{- if not .Values.devMode }}
{{- if and .Values.producer.enabled (not (or .Values.producer.auth.tokens .Values.producer.auth.existingSecret)) }}
{{- fail "producer.auth.tokens or producer.auth.existingSecret is required: the producer API refuses to start without tokens (devMode=true allows anonymous access on a laptop cluster)" }}
{{- end }}
{{- if .Values.monitor.enabled }}
{{- if not (or .Values.monitor.database.url .Values.monitor.database.existingSecret) }}
{{- fail "monitor.database.url or monitor.database.existingSecret (PostgreSQL) is required: without it the monitor would keep SQLite on an emptyDir, lost on restart (devMode=true allows it)" }}
{{- end }}
{{- if not .Values.monitor.auth.existingSecret }}
{{- if not (or .Values.monitor.auth.tokens .Values.monitor.auth.users) }}
{{- fail "monitor.auth.existingSecret (or monitor.auth.tokens/users) is required: the monitor would have no way in (devMode=true allows it)" }}
{{- end }}
{{- if lt (len .Values.monitor.auth.sessionSecret) 32 }}
{{- fail "monitor.auth.sessionSecret (32+ characters) is required with monitor.auth.tokens/users, or use monitor.auth.existingSecret: a generated one would change on every render" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One NetworkPolicy egress rule: (dict "to" <peers, empty = anywhere> "ports" <NetworkPolicyPorts>). */}}
{{- define "jetqueue.egressRule" -}}
- ports:
    {{- toYaml .ports | nindent 4 }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A NetworkPolicy's ingress: one rule from these peers to one port, or none at all (an empty "from"
would mean every source): (dict "from" <peers> "port" 8080). */}}
{{- define "jetqueue.ingressRule" -}}
{{- if .from }}
ingress:
  - ports: [{protocol: TCP, port: {{ .port }}}]
    from:
      {{- toYaml .from | nindent 6 }}
{{- else }}
ingress: []
{{- end }}
{{- end -}}
