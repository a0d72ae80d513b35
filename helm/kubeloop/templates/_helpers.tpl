{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "kubeloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-derived prefix of every resource name. */}}
{{- define "kubeloop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: (dict "ctx" $ "component" "server"). */}}
{{- define "kubeloop.component.fullname" -}}
{{- printf "%s-%s" (include "kubeloop.fullname" .ctx | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "kubeloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. helm.sh/chart is here, never in selectors. */}}
{{- define "kubeloop.labels" -}}
helm.sh/chart: {{ include "kubeloop.chart" . }}
app.kubernetes.io/name: {{ include "kubeloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeloop
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "server"). Stable across upgrades. */}}
{{- define "kubeloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeloop.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "kubeloop.componentLabels" -}}
{{ include "kubeloop.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference: (dict "ctx" $ "image" "server"|"python"). */}}
{{- define "kubeloop.image" -}}
{{- $img := index .ctx.Values.image .image -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry $img.repository (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{- define "kubeloop.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload: (dict "ctx" $ "component" "server" "serviceAccount" true). */}}
{{- define "kubeloop.podSpecCommon" -}}
serviceAccountName: {{ include "kubeloop.component.fullname" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- include "kubeloop.imagePullSecrets" .ctx }}
{{- with .ctx.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .ctx.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "kubeloop.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* One environment variable read from an existing Secret. */}}
{{- define "kubeloop.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* MLflow tracking URI every client uses (MLFLOW_TRACKING_URI). */}}
{{- define "kubeloop.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%d" (include "kubeloop.component.fullname" (dict "ctx" . "component" "mlflow")) (int .Values.mlflow.port) -}}
{{- else -}}
{{- .Values.mlflow.externalTrackingUri -}}
{{- end -}}
{{- end -}}

{{/* The MLflow user one kind of client signs in as (dict "ctx" $ "client" server|jobs|rollout):
  MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD from mlflow.clientCredentials, if set. */}}
{{- define "kubeloop.env.mlflowClient" -}}
{{- with index .ctx.Values.mlflow.clientCredentials .client }}
{{ include "kubeloop.secretEnv" (dict "name" "MLFLOW_TRACKING_USERNAME" "secret" . "key" "username") }}
{{ include "kubeloop.secretEnv" (dict "name" "MLFLOW_TRACKING_PASSWORD" "secret" . "key" "password") }}
{{- end }}
{{- end -}}

{{/* Path of the project spec inside the containers (KUBELOOP_SPEC). */}}
{{- define "kubeloop.specPath" -}}
{{- if .Values.project.spec -}}/etc/kubeloop/spec.yaml{{- else -}}{{ .Values.project.bundledSpec }}{{- end -}}
{{- end -}}

{{/* Settings every kubeloop process (PlatformSettings) reads. */}}
{{- define "kubeloop.env.platform" -}}
- name: KUBELOOP_ENV
  value: {{ .Values.environment | quote }}
- name: KUBELOOP_WORK_DIR
  value: {{ .Values.project.workDir | quote }}
- name: KUBELOOP_SPEC
  value: {{ include "kubeloop.specPath" . | quote }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "kubeloop.mlflow.trackingUri" . | quote }}
{{- /* The production half serves the registered model releases are copied into (the spec's
  rollout.production_model), never the one training writes to; its monitoring reads that
  model's predictions. One setting (PlatformSettings.served_model) for every process. */}}
{{- if eq .Values.rollout.phase "production" }}
- name: KUBELOOP_SERVED_MODEL
  value: production
{{- end }}
{{- end -}}

{{/* Feast online store and registry (PlatformSettings), for the server and the jobs. */}}
{{- define "kubeloop.env.featureStore" -}}
- name: KUBELOOP_FEAST_ONLINE_STORE
  value: redis
{{ include "kubeloop.env.featureStoreConnections" . }}
{{- with .Values.featureStore.offlineStore.existingSecret }}
{{ include "kubeloop.secretEnv" (dict "name" "KUBELOOP_FEAST_OFFLINE_STORE" "secret" . "key" $.Values.featureStore.offlineStore.existingSecretKey) }}
{{- end }}
{{- end -}}

{{/* The image pipelines compile into every step (PlatformSettings.pipeline_image), from the
  chart's image values: for the processes that compile and submit (monitor, training triggers). */}}
{{- define "kubeloop.env.pipelineImage" -}}
- name: KUBELOOP_PIPELINE_IMAGE_REGISTRY
  value: {{ .Values.image.registry | quote }}
- name: KUBELOOP_PIPELINE_IMAGE_REPOSITORY
  value: {{ .Values.image.python.repository | quote }}
- name: KUBELOOP_PIPELINE_IMAGE_TAG
  value: {{ default .Chart.AppVersion .Values.image.tag | quote }}
{{- end -}}

{{/* Where Redis and the registry are: also the ${VAR}s of the feature server's feature_store.yaml. */}}
{{- define "kubeloop.env.featureStoreConnections" -}}
{{- $fs := .Values.featureStore -}}
{{- if $fs.redis.existingSecret }}
{{ include "kubeloop.secretEnv" (dict "name" "KUBELOOP_REDIS_URL" "secret" $fs.redis.existingSecret "key" $fs.redis.existingSecretKey) }}
{{- else }}
- name: KUBELOOP_REDIS_URL
  value: {{ include "kubeloop.redisAddress" . | quote }}
{{- end }}
{{ include "kubeloop.secretEnv" (dict "name" "KUBELOOP_FEAST_REGISTRY" "secret" $fs.registry.existingSecret "key" $fs.registry.existingSecretKey) }}
{{- end -}}

{{- define "kubeloop.redisAddress" -}}
{{- if .Values.featureStore.redis.address -}}
{{- .Values.featureStore.redis.address -}}
{{- else -}}
{{- printf "%s-redis-master:6379" .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* KUBELOOP_<NAME> variables from a settings map (server.settings, monitoring.settings). */}}
{{- define "kubeloop.env.settings" -}}
{{- range $key, $value := . }}
- name: {{ printf "KUBELOOP_%s" ($key | snakecase | upper) }}
  value: {{ ternary ($value | toJson) ($value | toString) (or (kindIs "map" $value) (kindIs "slice" $value)) | quote }}
{{- end }}
{{- end -}}

{{/* Scratch volumes: /tmp (work folder, temp files) on an emptyDir, plus the spec ConfigMap. */}}
{{- define "kubeloop.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
{{- if .Values.project.spec }}
- name: spec
  configMap:
    name: {{ include "kubeloop.component.fullname" (dict "ctx" . "component" "spec") }}
{{- end }}
{{- end -}}

{{- define "kubeloop.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.project.spec }}
- name: spec
  mountPath: /etc/kubeloop
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Cross-field checks the schema cannot express. Each message names the key to set, as in
bitnami's validateValues: all problems are collected and reported at once.
*/}}
{{- define "kubeloop.validateValues" -}}
{{- $messages := list -}}
{{- $dev := eq .Values.environment "dev" -}}
{{- if and .Values.server.enabled (not $dev) (not .Values.server.auth.existingSecret) -}}
{{- $messages = append $messages (printf "server.auth.existingSecret: environment %q needs the API token from an existing Secret" .Values.environment) -}}
{{- end -}}
{{- if and (or .Values.server.enabled .Values.monitoring.enabled) (not $dev) (not .Values.server.predictionLog.existingSecret) -}}
{{- $messages = append $messages (printf "server.predictionLog.existingSecret: environment %q needs the prediction log (PostgreSQL) URL from an existing Secret" .Values.environment) -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (not $dev) (not .Values.mlflow.backendStore.existingSecret) -}}
{{- $messages = append $messages (printf "mlflow.backendStore.existingSecret: environment %q needs a PostgreSQL backend store (SQLite on an emptyDir is for dev only)" .Values.environment) -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (not $dev) (not .Values.mlflow.artifacts.destination) -}}
{{- $messages = append $messages (printf "mlflow.artifacts.destination: environment %q needs an s3:// artifact destination" .Values.environment) -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (gt (int .Values.mlflow.replicas) 1) (not .Values.mlflow.backendStore.existingSecret) -}}
{{- $messages = append $messages "mlflow.replicas: more than one replica needs mlflow.backendStore.existingSecret (a shared PostgreSQL store)" -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (not $dev) (not .Values.mlflow.auth.existingSecret) -}}
{{- $messages = append $messages (printf "mlflow.auth.existingSecret: environment %q needs MLflow's basic-auth (without it anyone who reaches MLflow can release to production)" .Values.environment) -}}
{{- end -}}
{{- /* Where the registry authenticates (this chart's MLflow with auth, or outside dev the central
  one another release runs), a client without a user gets 401 on every call. */ -}}
{{- if or .Values.mlflow.auth.existingSecret (and (not $dev) (not .Values.mlflow.enabled)) -}}
{{- $clients := dict "server" .Values.server.enabled "jobs" (or .Values.monitoring.enabled .Values.featureStore.materialize.enabled .Values.pipelines.schedule.enabled .Values.pipelines.newData.enabled) "rollout" (and .Values.rollout.enabled .Values.server.enabled) -}}
{{- range $client, $runs := $clients -}}
{{- if and $runs (not (index $.Values.mlflow.clientCredentials $client)) -}}
{{- $messages = append $messages (printf "mlflow.clientCredentials.%s: the registry authenticates; set the Secret with this client's MLflow user (keys username and password)" $client) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.mlflow.enabled) (not .Values.mlflow.externalTrackingUri) -}}
{{- $messages = append $messages "mlflow.externalTrackingUri: set it when mlflow.enabled is false" -}}
{{- end -}}
{{- if and .Values.featureStore.enabled (not .Values.featureStore.registry.existingSecret) -}}
{{- $messages = append $messages "featureStore.registry.existingSecret: the feature store needs its SQL registry URL from an existing Secret" -}}
{{- end -}}
{{- if and .Values.featureStore.enabled (not $dev) (not .Values.featureStore.offlineStore.existingSecret) -}}
{{- $messages = append $messages (printf "featureStore.offlineStore.existingSecret: environment %q needs Feast's offline store in PostgreSQL (the pipeline steps write it; Parquet in a pod's work folder is for dev only)" .Values.environment) -}}
{{- end -}}
{{- if and .Values.featureStore.enabled (not .Values.featureStore.redis.existingSecret) (not .Values.featureStore.redis.address) (not .Values.redis.enabled) -}}
{{- $messages = append $messages "featureStore.redis.address: set it (or featureStore.redis.existingSecret, or redis.enabled)" -}}
{{- end -}}
{{- if and .Values.server.autoscaling.enabled (gt (int .Values.server.autoscaling.minReplicas) (int .Values.server.autoscaling.maxReplicas)) -}}
{{- $messages = append $messages "server.autoscaling.minReplicas: must not exceed server.autoscaling.maxReplicas" -}}
{{- end -}}
{{- /* Only a dev server without any token leaves /admin/* open; with a token and no admin
  token it answers 403 there, and the rollout controller could not move traffic. */ -}}
{{- if and .Values.rollout.enabled .Values.server.enabled (not .Values.server.auth.adminExistingSecret) (or (not $dev) .Values.server.auth.existingSecret) -}}
{{- $messages = append $messages "server.auth.adminExistingSecret: the rollout controller calls the server's admin routes, which answer 403 without the admin token" -}}
{{- end -}}
{{- if and .Values.server.ingress.enabled (not .Values.server.ingress.host) -}}
{{- $messages = append $messages "server.ingress.host: set a host name when server.ingress.enabled is true" -}}
{{- end -}}
{{- if and .Values.workspace.enabled (not .Values.workspace.repository.url) -}}
{{- $messages = append $messages "workspace.repository.url: the workspace clones the project's repository; set its URL" -}}
{{- end -}}
{{- if and .Values.workspace.enabled (not $dev) (not .Values.workspace.auth.existingSecret) -}}
{{- $messages = append $messages (printf "workspace.auth.existingSecret: environment %q needs JupyterLab's token from an existing Secret" .Values.environment) -}}
{{- end -}}
{{- if and .Values.workspace.enabled (not .Values.rbac.create) -}}
{{- $messages = append $messages "rbac.create: the workspace runs with the data-scientist Roles; it needs them" -}}
{{- end -}}
{{- range $trigger := list "schedule" "newData" -}}
{{- if and (index $.Values.pipelines $trigger).enabled (not $.Values.monitoring.kfpHost) -}}
{{- $messages = append $messages (printf "monitoring.kfpHost: pipelines.%s.enabled submits training runs to KFP; set the KFP API URL" $trigger) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.pipelines.gateway.enabled .Values.rbac.create (not .Values.rbac.kfpNamespace) -}}
{{- $messages = append $messages "rbac.kfpNamespace: the KFP gateway runs in KFP's namespace; set it, or pipelines.gateway.enabled: false" -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}

{{/* The KFP gateway's URL (kfp-gateway.yaml), where the workspace's notebooks reach KFP. */}}
{{- define "kubeloop.kfpGateway.url" -}}
{{- printf "http://%s.%s:8888" (include "kubeloop.component.fullname" (dict "ctx" . "component" "kfp-gateway")) .Values.rbac.kfpNamespace -}}
{{- end -}}

{{/* KFP_HOST of the workspace: workspace.kfpHost, else the KFP gateway (the one KFP Service the
data-scientist Role may reach), else monitoring.kfpHost when the chart runs no gateway. */}}
{{- define "kubeloop.workspace.kfpHost" -}}
{{- if .Values.workspace.kfpHost -}}
{{- .Values.workspace.kfpHost -}}
{{- else if and .Values.pipelines.gateway.enabled .Values.rbac.kfpNamespace -}}
{{- include "kubeloop.kfpGateway.url" . -}}
{{- else -}}
{{- .Values.monitoring.kfpHost -}}
{{- end -}}
{{- end -}}

{{/* The data scientists' ServiceAccount: the workspace runs as it (workspace.yaml). */}}
{{- define "kubeloop.workspace.serviceAccount" -}}
{{- include "kubeloop.component.fullname" (dict "ctx" . "component" "data-scientist") -}}
{{- end -}}

{{/* The server's container port: kubeloop/images.py SERVER_PORT, fixed in the image. */}}
{{- define "kubeloop.server.containerPort" -}}8080{{- end -}}

{{/* Where the server spools predictions (its own volume: server.predictionLog.spool). */}}
{{- define "kubeloop.server.spoolDir" -}}/var/lib/kubeloop/spool{{- end -}}
