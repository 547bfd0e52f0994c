{{/* Chart name, overridable. */}}
{{- define "cardano-forge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<name> unless the release name already contains it. */}}
{{- define "cardano-forge.fullname" -}}
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

{{- define "cardano-forge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only, so they never change on upgrade. */}}
{{- define "cardano-forge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cardano-forge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cardano-forge.labels" -}}
helm.sh/chart: {{ include "cardano-forge.chart" . }}
{{ include "cardano-forge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cardano-forge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cardano-forge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cardano-forge.forgeManagerImage" -}}
{{- $img := .Values.forgeManager.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{- define "cardano-forge.nodeImage" -}}
{{- printf "%s:%s" .Values.node.image.repository .Values.node.image.tag }}
{{- end }}

{{/* The region's name: CLUSTER_NAME and the CardanoForgeCluster's name. */}}
{{- define "cardano-forge.clusterName" -}}
{{- default .Release.Namespace .Values.forgeManager.clusterManagement.clusterName }}
{{- end }}

{{/* Namespace of the CardanoForgeCluster objects and the pool-wide Lease. */}}
{{- define "cardano-forge.coordinationNamespace" -}}
{{- default .Release.Namespace .Values.forgeManager.clusterManagement.coordination.namespace }}
{{- end }}

{{/* The restricted security context every container runs with. */}}
{{- define "cardano-forge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A probe from the seed's values layout (enabled + the probe's own fields). */}}
{{- define "cardano-forge.probe" -}}
{{- omit . "enabled" | toYaml }}
{{- end }}

{{/* Checks of value combinations the schema cannot express. */}}
{{- define "cardano-forge.validate" -}}
{{- $fm := .Values.forgeManager }}
{{- if not $fm.credentials.secretName }}
{{- fail "forgeManager.credentials.secretName is required: the Secret with kes.skey, vrf.skey and node.cert" }}
{{- end }}
{{- $lease := $fm.lease }}
{{- if not (gt (float64 $lease.durationSeconds) (float64 $lease.renewDeadlineSeconds)) }}
{{- fail (printf "forgeManager.lease.durationSeconds (%v) must exceed renewDeadlineSeconds (%v)" $lease.durationSeconds $lease.renewDeadlineSeconds) }}
{{- end }}
{{- if not (gt (float64 $lease.renewDeadlineSeconds) (mulf 1.2 (float64 $lease.retryPeriodSeconds))) }}
{{- fail (printf "forgeManager.lease.renewDeadlineSeconds (%v) must exceed 1.2 x retryPeriodSeconds (%v)" $lease.renewDeadlineSeconds $lease.retryPeriodSeconds) }}
{{- end }}
{{- $cm := $fm.clusterManagement }}
{{- if $cm.enabled }}
{{- if not $cm.clusterName }}
{{- fail "forgeManager.clusterManagement.clusterName is required when clusterManagement.enabled is true, e.g. us-east-1-prod" }}
{{- end }}
{{- $hc := $cm.healthCheck }}
{{- if and $hc.enabled (not (include "cardano-forge.healthCheckEndpoint" .)) }}
{{- fail "forgeManager.clusterManagement.healthCheck.endpoint is required when healthCheck.enabled is true (or enable healthEndpoint)" }}
{{- end }}
{{- if not (lt (int $hc.timeout) (int $hc.interval)) }}
{{- fail (printf "forgeManager.clusterManagement.healthCheck.timeout (%v) must be less than interval (%v)" $hc.timeout $hc.interval) }}
{{- end }}
{{- if and $cm.createResource $cm.coordination.kubeconfigSecret }}
{{- fail "forgeManager.clusterManagement.createResource cannot create the resource in a remote coordination API (coordination.kubeconfigSecret is set): set createResource=false, the forge manager creates it there" }}
{{- end }}
{{- if and $cm.createResource (not (.Capabilities.APIVersions.Has "cardano.io/v1/CardanoForgeCluster")) }}
{{- fail "forgeManager.clusterManagement.createResource needs the CardanoForgeCluster CRD installed before this release (kubectl apply -f crds/); or set createResource=false and the forge manager creates the resource" }}
{{- end }}
{{- end }}
{{- $sync := $fm.nodeSync }}
{{- if and $sync.enabled (eq $sync.network "custom") (not $sync.custom.shelleyStartTime) }}
{{- fail "forgeManager.nodeSync.custom.shelleyStartTime is required when nodeSync.network is custom: when custom.shelleyStartSlot began, e.g. 2022-06-21T00:00:00Z" }}
{{- end }}
{{- if and .Values.healthEndpoint.enabled (not .Values.healthEndpoint.prometheusUrl) }}
{{- fail "healthEndpoint.prometheusUrl is required when healthEndpoint.enabled is true, e.g. http://prometheus-operated.monitoring:9090" }}
{{- end }}
{{- if and .Values.node.persistence.existingClaim (gt (int .Values.replicas) 1) }}
{{- fail (printf "node.persistence.existingClaim mounts one claim into every pod, so it needs replicas: 1 (not %v); for several pods leave it empty and create claims named data-%s-<ordinal> beforehand: the StatefulSet adopts them" .Values.replicas (include "cardano-forge.fullname" .)) }}
{{- end }}
{{- $_ := include "cardano-forge.nonProducingFlag" . }}
{{- range $name, $probe := .Values.healthChecks.forgeManager }}
{{- if and $probe.enabled (ne (int $probe.httpGet.port) (int $fm.port)) }}
{{- fail (printf "healthChecks.forgeManager.%s.httpGet.port (%v) must be forgeManager.port (%v)" $name $probe.httpGet.port $fm.port) }}
{{- end }}
{{- end }}
{{- end }}


{{/* The health check URL: the configured one, else this release's health endpoint. */}}
{{- define "cardano-forge.healthCheckEndpoint" -}}
{{- $hc := .Values.forgeManager.clusterManagement.healthCheck }}
{{- if $hc.endpoint }}
{{- $hc.endpoint }}
{{- else if .Values.healthEndpoint.enabled }}
{{- printf "http://%s-health.%s.svc:%d/api/v1/health/cluster/%s" (include "cardano-forge.fullname" .) .Release.Namespace (int .Values.healthEndpoint.port) (include "cardano-forge.clusterName" .) }}
{{- end }}
{{- end }}

{{- define "cardano-forge.healthEndpointImage" -}}
{{- $img := .Values.healthEndpoint.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{/* The health endpoint is its own app (as cert-manager's webhook and cainjector are), so the
block producers' selectors (name + instance) never match its pods. */}}
{{- define "cardano-forge.healthSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cardano-forge.name" . }}-health
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cardano-forge.healthLabels" -}}
helm.sh/chart: {{ include "cardano-forge.chart" . }}
{{ include "cardano-forge.healthSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: health-endpoint
{{- end }}

{{/* >>> well-kept chart helpers: node version, non-producing flag, anti-affinity */}}
{{/* The cardano-node version: node.version, else the image tag (which must then be a version). */}}
{{- define "cardano-forge.nodeVersion" -}}
{{- $v := .Values.node.version | default .Values.node.image.tag | toString }}
{{- if not (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.-]+)?$" $v) }}
{{- fail (printf "node.image.tag %q is not a cardano-node version: set node.version to the version the image runs, e.g. 11.0.1 (it chooses the non-producing flag)" $v) }}
{{- end }}
{{- $v }}
{{- end }}

{{/* The flag that starts cardano-node non-producing, as the configured version spells it. */}}
{{- define "cardano-forge.nonProducingFlag" -}}
{{- $v := include "cardano-forge.nodeVersion" . }}
{{- if semverCompare ">=10.5.1-0" $v }}
{{- "--start-as-non-producing-node" }}
{{- else if semverCompare ">=8.7.2-0" $v }}
{{- "--non-producing-node" }}
{{- else }}
{{- fail (printf "cardano-node %s cannot start non-producing (the flag exists from 8.7.2): use 8.7.2 or newer" $v) }}
{{- end }}
{{- end }}

{{/* The pods' affinity: `affinity` when set, else the anti-affinity podAntiAffinity asks for. */}}
{{- define "cardano-forge.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if ne .Values.podAntiAffinity.type "none" }}
{{- $selector := include "cardano-forge.selectorLabels" . }}
podAntiAffinity:
  {{- if eq .Values.podAntiAffinity.type "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- $selector | nindent 10 }}
  {{- end }}
  {{- if or (eq .Values.podAntiAffinity.type "soft") .Values.podAntiAffinity.zone }}
  preferredDuringSchedulingIgnoredDuringExecution:
    {{- if eq .Values.podAntiAffinity.type "soft" }}
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- $selector | nindent 12 }}
    {{- end }}
    {{- if .Values.podAntiAffinity.zone }}
    - weight: 50
      podAffinityTerm:
        topologyKey: topology.kubernetes.io/zone
        labelSelector:
          matchLabels:
            {{- $selector | nindent 12 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{/* <<< well-kept chart helpers */}}
