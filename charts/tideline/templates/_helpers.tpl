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

{{- /* The release's labels for one component: (list $ "redis"). */}}
{{- define "tideline.labelsFor" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: tideline
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version }}
{{- end -}}

{{- /* metrics.monitorLabels as YAML, each value a string (a label's value is one, where
--set release=1 gives a number). A key the operator or the chart sets fails the render. */}}
{{- define "tideline.monitorLabels" -}}
{{- $labels := dict }}
{{- range $key, $value := .Values.metrics.monitorLabels }}
{{- if regexMatch "^(app\\.kubernetes\\.io|tideline\\.dev|helm\\.sh)/" $key }}
{{- fail (printf "metrics.monitorLabels: %q is a label the operator or the chart sets itself" $key) }}
{{- end }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $value = int64 $value }}{{- /* (a whole number: 12345678901, not 1.2345678901e+10) */}}
{{- end }}
{{- $_ := set $labels $key (toString $value) }}
{{- end }}
{{- with $labels }}{{ toYaml . }}{{ end }}
{{- end -}}

{{- /* metrics.monitorLabels as the operator reads them (TIDELINE_MONITOR_LABELS):
key=value,key=value. */}}
{{- define "tideline.monitorLabelPairs" -}}
{{- $pairs := list }}
{{- range $key, $value := include "tideline.monitorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end -}}

{{- define "tideline.selector" -}}
app.kubernetes.io/name: tideline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tideline.serviceAccount" -}}
{{- default (include "tideline.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- /* The operator's image: repository@digest when image.digest is set (a digest no push
can move), else repository:tag (the appVersion when no tag). */}}
{{- define "tideline.image" -}}
{{- with .Values.image.digest -}}
{{- if not (regexMatch "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$" .) -}}
{{- fail (printf "image.digest %q is no digest: write it as sha256:<64 hex digits>" .) -}}
{{- end -}}
{{- printf "%s@%s" $.Values.image.repository . -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules: its resource, the children it builds, events, kopf's own needs. */}}
{{- /* "true" when RBAC is namespaced: rbac.namespaced when set, else whenever
watchNamespaces names namespaces (least privilege by default). */}}
{{- define "tideline.namespaced" -}}
{{- if kindIs "bool" .Values.rbac.namespaced -}}
{{- if .Values.rbac.namespaced }}true{{ end -}}
{{- else if .Values.watchNamespaces -}}
true
{{- end -}}
{{- end -}}

{{- define "tideline.rules" -}}
{{- /* onlinemodels: watched (list, watch) and read; patch for kopf's finalizer only
(the operator never edits spec); status: written once per changed turn. */}}
- apiGroups: [tideline.dev]
  resources: [onlinemodels]
  verbs: [get, list, watch, patch]
- apiGroups: [tideline.dev]
  resources: [onlinemodels/status]
  verbs: [get, patch]
{{- /* deployments: the model's learner, servers and monitor - watched for readiness,
applied (create, patch), a removed revision's deleted; get checks ownership first. */}}
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
{{- /* configmaps (a revision's resolved spec) and services (stable, canary): applied,
listed by revision label and deleted with a removed revision; get checks ownership. */}}
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, create, patch, delete]
{{- /* secrets: get reads spec.redis.secretRef's URL; create and patch write each model's
own <name>-redis Secret (the operator's Redis URL, for its pods' secretKeyRef). Every
child kind has get: nothing is applied over an object the OnlineModel does not own. */}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
{{- /* the servers' PodDisruptionBudget, optional HPA and ServiceMonitor: applied
(get checks ownership); they go with the OnlineModel by garbage collection. */}}
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, podmonitors]
  verbs: [get, create, patch]
{{- /* spec.serving.networkPolicy: who may reach the model's servers, applied (get
checks ownership); it goes with the OnlineModel by garbage collection. */}}
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch]
{{- /* the user's HTTPRoute named by trafficRouting.gatewayAPI: its weights patched. */}}
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- /* Events: Deployed, CanaryStarted, Promoted, RolledBack, ... */}}
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- /* kopf's peering: replicas agree on which one is active. */}}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch, get]
{{- end -}}

{{- /* The bundled Redis: its name (StatefulSet, Service, NetworkPolicy), its Secret's, and
the labels selecting its pod (one set, for the StatefulSet, its pod, the Service and the
NetworkPolicy). */}}
{{- define "tideline.redisName" -}}
{{- printf "%s-redis" (include "tideline.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tideline.redisSecret" -}}
{{- printf "%s-redis-auth" (include "tideline.fullname" .) -}}
{{- end -}}

{{- /* The namespaces whose model pods may reach the bundled Redis, a JSON list: the
release's, watchNamespaces, and redis.bundled.clientNamespaces - unset, `default` when the
operator watches every namespace (the quick start's models land there), none otherwise. */}}
{{- define "tideline.redisClientNamespaces" -}}
{{- $extra := .Values.redis.bundled.clientNamespaces -}}
{{- if kindIs "invalid" $extra -}}
{{- $extra = ternary (list) (list "default") (not (empty .Values.watchNamespaces)) -}}
{{- end -}}
{{- concat (list .Release.Namespace) (.Values.watchNamespaces | default list) $extra | compact | uniq | toJson -}}
{{- end -}}

{{- define "tideline.redisSelector" -}}
app.kubernetes.io/name: tideline-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
