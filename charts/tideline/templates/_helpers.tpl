{{- define "tideline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tideline.labels" -}}
app.kubernetes.io/name: tideline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tideline.selector" -}}
app.kubernetes.io/name: tideline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tideline.serviceAccount" -}}
{{- default (include "tideline.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tideline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's rules: its resource, the children it builds, events, kopf's own needs. */}}
{{- define "tideline.rules" -}}
- apiGroups: [tideline.dev]
  resources: [onlinemodels]
  verbs: [get, list, watch, patch]
- apiGroups: [tideline.dev]
  resources: [onlinemodels/status]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, create, patch, delete]
{{- /* secrets: get reads spec.redis.secretRef's URL; create and patch write each model's
own <name>-redis Secret (the operator's Redis URL, for its pods' secretKeyRef). Every
child kind has get: nothing is applied over an object the OnlineModel does not own. */}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, create, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch, get]
{{- end -}}
