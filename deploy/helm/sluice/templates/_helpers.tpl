{{/* The chart's name. */}}
{{- define "sluice.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's objects' base name. */}}
{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 57 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object has. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select a component's pods; pass (list . "agent"). */}}
{{- define "sluice.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "sluice.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The image. */}}
{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* HOST:PORT agents dial to reach the hub. */}}
{{- define "sluice.hubAddress" -}}
{{- default (printf "%s-hub.%s.svc:%d" (include "sluice.fullname" .) .Release.Namespace (int .Values.hub.port)) .Values.hub.address -}}
{{- end -}}

{{/* "true" when the agent makes its node's pods workloads
(kubernetes.workloads), else "": use with `if include`. */}}
{{- define "sluice.podWorkloads" -}}
{{- $on := .Values.kubernetes.workloads -}}
{{- if not (kindIs "bool" $on) -}}
{{- fail (printf "kubernetes.workloads: %v (%s): want true or false, unquoted" $on (kindOf $on)) -}}
{{- end -}}
{{- if and .Values.agent.enabled $on -}}true{{- end -}}
{{- end -}}

{{/* The agent's configuration file (the ConfigMap's agent.yaml):
agent.config, with kubernetes: {enabled: true} when kubernetes.workloads. */}}
{{- define "sluice.agentConfig" -}}
{{- $config := deepCopy .Values.agent.config -}}
{{- if hasKey $config "kubernetes" -}}
{{- fail "agent.config.kubernetes: set kubernetes.workloads instead (the chart writes the kubernetes: key and the ServiceAccount and RBAC it needs)" -}}
{{- end -}}
{{- if include "sluice.podWorkloads" . -}}
{{- $_ := set $config "kubernetes" (dict "enabled" true) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The agent's ServiceAccount (with kubernetes.workloads). */}}
{{- define "sluice.agentServiceAccount" -}}
{{- include "sluice.fullname" . }}-agent
{{- end -}}
