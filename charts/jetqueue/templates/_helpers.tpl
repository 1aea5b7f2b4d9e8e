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

{{/* Image of one component: (dict "ctx" $ "component" "producer"). */}}
{{- define "jetqueue.image" -}}
{{- $override := index (.ctx.Values.image.overrides | default dict) .component | default "" -}}
{{- if $override -}}
{{- $override -}}
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
{{- $_ := set $q "replicas" (dig "stream" "replicas" 1 $s) -}}
{{- $queues = append $queues $q -}}
{{- end -}}
{{- toYaml (dict "queues" $queues "schedules" .Values.schedules) -}}
{{- end -}}

{{/* Environment shared by every jetqueue container: NATS and the catalog. */}}
{{- define "jetqueue.commonEnv" -}}
- name: JETQUEUE_CATALOG
  value: /etc/jetqueue/catalog.yaml
{{- if .Values.operator.enabled }}
# The operator owns streams and consumers (storage, size caps); nobody else provisions them.
- name: JETQUEUE_PROVISION
  value: "false"
{{- end }}
{{- if .Values.nats.credsSecret }}
- name: JETQUEUE_NATS_CREDS
  value: /etc/jetqueue-nats/nats.creds
{{- end }}
{{- end -}}

{{- define "jetqueue.commonVolumes" -}}
- name: catalog
  configMap:
    name: {{ include "jetqueue.fullname" . }}-catalog
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credsSecret }}
{{- end }}
{{- end -}}

{{- define "jetqueue.commonMounts" -}}
- name: catalog
  mountPath: /etc/jetqueue
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  mountPath: /etc/jetqueue-nats
  readOnly: true
{{- end }}
{{- end -}}

{{/* Runbook link of one alert: (dict "ctx" $ "alert" "JetqueueLagHigh"); the anchors are docs/operations.md's headings. */}}
{{- define "jetqueue.runbookUrl" -}}
{{- printf "%s#%s" .ctx.Values.metrics.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end -}}
