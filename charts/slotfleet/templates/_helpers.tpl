{{/*
Names, labels and the operator's command line. Kept here so every template agrees on them.
*/}}

{{- define "slotfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "slotfleet.fullname" -}}
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

{{- define "slotfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the operator pod (immutable once installed: keep them small). */}}
{{- define "slotfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slotfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "slotfleet.labels" -}}
helm.sh/chart: {{ include "slotfleet.chart" . }}
{{ include "slotfleet.selectorLabels" . }}
{{ include "slotfleet.releaseLabels" . }}
{{- end }}

{{/* Labels every resource carries besides its selector labels. */}}
{{- define "slotfleet.releaseLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slotfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The dashboard's name, selector labels and labels. */}}
{{- define "slotfleet.dashboardName" -}}
{{- printf "%s-dashboard" (include "slotfleet.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{- define "slotfleet.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "slotfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "slotfleet.dashboardLabels" -}}
helm.sh/chart: {{ include "slotfleet.chart" . }}
{{ include "slotfleet.dashboardSelectorLabels" . }}
{{ include "slotfleet.releaseLabels" . }}
{{- end }}

{{- define "slotfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slotfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slotfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Watched namespaces as a list: the configured ones, or the release namespace.
Only meaningful when operator.watch.allNamespaces is false.
*/}}
{{- define "slotfleet.watchedNamespaces" -}}
{{- $namespaces := .Values.operator.watch.namespaces | default (list .Release.Namespace) }}
{{- toYaml (uniq $namespaces) }}
{{- end }}

{{/* Fail early on value combinations the schema cannot express. */}}
{{- define "slotfleet.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") .Values.operator.watch.allNamespaces }}
{{- fail "rbac.scope=namespaced cannot serve operator.watch.allNamespaces=true: set operator.watch.allNamespaces=false and list operator.watch.namespaces (or use rbac.scope=cluster)" }}
{{- end }}
{{- if and .Values.operator.watch.allNamespaces .Values.operator.watch.namespaces }}
{{- fail "operator.watch.namespaces is only used when operator.watch.allNamespaces=false" }}
{{- end }}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled=true: only the Lease holder may write" }}
{{- end }}
{{- if and .Values.operator.leaderElection.enabled (ne .Values.operator.peering "standalone") }}
{{- fail "operator.peering is for one operator without leader election: set operator.leaderElection.enabled=false and operator.replicas=1, or keep peering standalone" }}
{{- end }}
{{- if and .Values.dashboard.enabled (not .Values.dashboard.store.secretRef.name) }}
{{- fail "dashboard.enabled=true needs dashboard.store.secretRef.name: the Secret holding the job store's DSN" }}
{{- end }}
{{- if and .Values.dashboard.enabled .Values.dashboard.actions.enabled (not .Values.dashboard.actions.tokenSecretRef.name) }}
{{- fail "dashboard.actions.enabled=true needs dashboard.actions.tokenSecretRef.name: the Secret holding the action token (16 characters or more)" }}
{{- end }}
{{- end }}

{{/* The Lease the operator replicas elect their leader through (release namespace). */}}
{{- define "slotfleet.leaseName" -}}
{{- include "slotfleet.fullname" . }}
{{- end }}

{{/* Arguments of `slotfleet operator`. */}}
{{- define "slotfleet.operatorArgs" -}}
{{- if .Values.operator.watch.allNamespaces }}
- --all-namespaces
{{- else }}
{{- range (include "slotfleet.watchedNamespaces" . | fromYamlArray) }}
- --namespace={{ . }}
{{- end }}
{{- end }}
{{- if eq .Values.operator.peering "standalone" }}
- --standalone
{{- else }}
- --peering={{ .Values.operator.peering }}
{{- end }}
{{- if .Values.operator.leaderElection.enabled }}
- --leader-elect
- --lease-name={{ include "slotfleet.leaseName" . }}
- --lease-duration={{ .Values.operator.leaderElection.leaseDuration }}
{{- end }}
- --liveness=http://{{ .Values.operator.liveness.host }}:{{ .Values.operator.liveness.port }}/healthz
{{- if .Values.operator.metrics.enabled }}
- --metrics-host={{ .Values.operator.metrics.host }}
- --metrics-port={{ .Values.operator.metrics.port }}
{{- end }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}
