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
{{- $etcd := $cm.coordination.etcd }}
{{- if and $etcd.endpoints $cm.coordination.kubeconfigSecret }}
{{- fail "forgeManager.clusterManagement.coordination.etcd.endpoints and coordination.kubeconfigSecret are both set: with etcd each region's CardanoForgeCluster stays in its own cluster; unset one of them" }}
{{- end }}
{{- if and $etcd.tlsSecret (not $etcd.endpoints) }}
{{- fail "forgeManager.clusterManagement.coordination.etcd.tlsSecret is set but etcd.endpoints is empty: list the etcd members' client URLs, this region's first" }}
{{- end }}
{{- if $etcd.tlsSecret }}
{{- range $etcd.endpoints }}
{{- if not (hasPrefix "https://" .) }}
{{- fail (printf "forgeManager.clusterManagement.coordination.etcd.endpoints has %s: with etcd.tlsSecret every endpoint must be https://" .) }}
{{- end }}
{{- end }}
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
{{- $scheme := ternary "https" "http" (not (empty .Values.healthEndpoint.tls.existingSecret)) }}
{{- printf "%s://%s-health.%s.svc:%d/api/v1/health/cluster/%s" $scheme (include "cardano-forge.fullname" .) .Release.Namespace (int .Values.healthEndpoint.port) (include "cardano-forge.clusterName" .) }}
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

{{/* >>> health wiring: the node_exporter series the health endpoint reads */}}
{{- define "cardano-forge.nodeExporterSelector" -}}
{{- $he := .Values.healthEndpoint }}
{{- if and (eq $he.topology "global") $he.clusterLabel }}
{{- join "," (compact (list $he.nodeExporterSelector "$selector")) }}
{{- else }}
{{- $he.nodeExporterSelector }}
{{- end }}
{{- end }}
{{/* <<< health wiring */}}

{{/* >>> health endpoint security: the forge managers' CA bundle and token (volume sources) */}}
{{- define "cardano-forge.healthCACertSource" -}}
{{- $hc := .Values.forgeManager.clusterManagement.healthCheck }}
{{- if $hc.caBundle.configMap }}
configMap:
  name: {{ $hc.caBundle.configMap }}
  items:
    - key: {{ $hc.caBundle.key }}
      path: ca.crt
{{- else if $hc.caBundle.secret }}
secret:
  secretName: {{ $hc.caBundle.secret }}
  defaultMode: 0440
  items:
    - key: {{ $hc.caBundle.key }}
      path: ca.crt
{{- else if and .Values.healthEndpoint.enabled .Values.healthEndpoint.tls.existingSecret (not $hc.endpoint) }}
secret:
  secretName: {{ .Values.healthEndpoint.tls.existingSecret }}
  defaultMode: 0440
  items:
    - key: ca.crt
      path: ca.crt
{{- end }}
{{- end }}

{{- define "cardano-forge.healthTokenSource" -}}
{{- $hc := .Values.forgeManager.clusterManagement.healthCheck }}
{{- $he := .Values.healthEndpoint }}
{{- if $hc.tokenSecret }}
secret:
  secretName: {{ $hc.tokenSecret }}
  defaultMode: 0440
  items:
    - key: {{ $hc.tokenKey }}
      path: token
{{- else if and $he.enabled $he.auth.existingSecret }}
secret:
  secretName: {{ $he.auth.existingSecret }}
  defaultMode: 0440
  items:
    - key: {{ $he.auth.tokenKey }}
      path: token
{{- end }}
{{- end }}
{{/* <<< health endpoint security */}}

{{/* >>> node bootstrap per network */}}
{{/* The network's published data (files/networks/<network>.json); empty for custom. */}}
{{- define "cardano-forge.networkData" -}}
{{- if ne .Values.node.network "custom" }}
{{- .Files.Get (printf "files/networks/%s.json" .Values.node.network) }}
{{- else }}
{{- "{}" }}
{{- end }}
{{- end }}

{{/* Where the genesis files are in the node's container. */}}
{{- define "cardano-forge.genesisDir" -}}
/opt/cardano/genesis
{{- end }}

{{/* The node configuration (JSON): the network's published one, Prometheus bound for scraping,
genesis files in genesisDir, node.config.overrides on top. */}}
{{- define "cardano-forge.nodeConfig" -}}
{{- $node := .Values.node }}
{{- $cfg := dict }}
{{- if eq $node.network "custom" }}
{{- $cfg = deepCopy $node.config.custom }}
{{- else }}
{{- $data := include "cardano-forge.networkData" . | fromJson }}
{{- $cfg = .Files.Get "files/networks/node-config-base.json" | fromJson }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $data.config) }}
{{- $trace := mustMergeOverwrite (deepCopy $cfg.TraceOptions) (deepCopy $data.traceOptions) }}
{{- $root := get $trace "" }}
{{- $backends := list }}
{{- range $root.backends }}
{{- if hasPrefix "PrometheusSimple" . }}
{{- $backends = append $backends (printf "PrometheusSimple suffix 0.0.0.0 %d" (int $node.metricsPort)) }}
{{- else }}
{{- $backends = append $backends . }}
{{- end }}
{{- end }}
{{- $_ := set $root "backends" $backends }}
{{- $_ := set $cfg "TraceOptions" $trace }}
{{- end }}
{{- if ne $node.genesis.source "none" }}
{{- range list "ByronGenesisFile" "ShelleyGenesisFile" "AlonzoGenesisFile" "ConwayGenesisFile" "DijkstraGenesisFile" "CheckpointsFile" }}
{{- if hasKey $cfg . }}
{{- $_ := set $cfg . (printf "%s/%s" (include "cardano-forge.genesisDir" $) (base (get $cfg .))) }}
{{- end }}
{{- end }}
{{- end }}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $node.config.overrides) }}
{{- toPrettyJson $cfg }}
{{- end }}

{{/* The topology (JSON): the relays as trustable local roots, bootstrap peers, no ledger peers. */}}
{{- define "cardano-forge.nodeTopology" -}}
{{- $topo := .Values.node.topology }}
{{- $data := include "cardano-forge.networkData" . | fromJson }}
{{- $bootstrap := $topo.bootstrapPeers }}
{{- if kindIs "invalid" $bootstrap }}
{{- $bootstrap = $data.bootstrapPeers | default list }}
{{- end }}
{{- $relays := list }}
{{- range $topo.relays }}
{{- $relays = append $relays (dict "address" .address "port" (int .port)) }}
{{- end }}
{{- $peers := list }}
{{- range $bootstrap }}
{{- $peers = append $peers (dict "address" .address "port" (int .port)) }}
{{- end }}
{{- $local := dict "accessPoints" $relays "advertise" false "trustable" true "hotValency" (int ($topo.hotValency | default (max 1 (len $relays)))) }}
{{- $doc := dict "localRoots" (list $local) "publicRoots" (list (dict "accessPoints" list "advertise" false)) "useLedgerAfterSlot" (int $topo.useLedgerAfterSlot) }}
{{- if $peers }}
{{- $_ := set $doc "bootstrapPeers" $peers }}
{{- else }}
{{- $_ := set $doc "bootstrapPeers" nil }}
{{- end }}
{{- toPrettyJson $doc }}
{{- end }}

{{/* The Mithril client's settings: the values, else the network's published ones. */}}
{{- define "cardano-forge.mithril" -}}
{{- $m := .Values.node.mithril }}
{{- $data := include "cardano-forge.networkData" . | fromJson }}
{{- $pub := $data.mithril | default dict }}
{{- toJson (dict "aggregatorEndpoint" ($m.aggregatorEndpoint | default $pub.aggregatorEndpoint) "genesisVerificationKey" ($m.genesisVerificationKey | default $pub.genesisVerificationKey) "ancillaryVerificationKey" ($m.ancillaryVerificationKey | default $pub.ancillaryVerificationKey)) }}
{{- end }}

{{/* The base URL of the genesis files. */}}
{{- define "cardano-forge.genesisBaseUrl" -}}
{{- if .Values.node.genesis.baseUrl }}
{{- .Values.node.genesis.baseUrl }}
{{- else if ne .Values.node.network "custom" }}
{{- printf "https://book.play.dev.cardano.org/environments/%s" .Values.node.network }}
{{- end }}
{{- end }}

{{/* The node configuration's ConfigMap: node.configMap, else the rendered one. */}}
{{- define "cardano-forge.nodeConfigMap" -}}
{{- .Values.node.configMap | default (printf "%s-node-config" (include "cardano-forge.fullname" .)) }}
{{- end }}

{{- define "cardano-forge.validateBootstrap" -}}
{{- $node := .Values.node }}
{{- if and (eq $node.network "custom") (not $node.configMap) (not $node.config.custom) }}
{{- fail "node.network is custom: set node.config.custom to the node configuration (or node.configMap to your own ConfigMap)" }}
{{- end }}
{{- if and (eq $node.genesis.source "download") (not (include "cardano-forge.genesisBaseUrl" .)) }}
{{- fail "node.genesis.baseUrl is required for a custom network: where its genesis files are published" }}
{{- end }}
{{- if and (eq $node.genesis.source "configMap") (not $node.genesis.configMap) }}
{{- fail "node.genesis.source is configMap: set node.genesis.configMap to the ConfigMap with the genesis files" }}
{{- end }}
{{- if and (eq $node.genesis.source "volume") (not $node.genesis.volume) }}
{{- fail "node.genesis.source is volume: set node.genesis.volume to a volume source, e.g. {persistentVolumeClaim: {claimName: cardano-genesis}}" }}
{{- end }}
{{- if $node.mithril.enabled }}
{{- $m := include "cardano-forge.mithril" . | fromJson }}
{{- if or (not $m.aggregatorEndpoint) (not $m.genesisVerificationKey) }}
{{- fail "node.mithril.aggregatorEndpoint and genesisVerificationKey are required for a custom network" }}
{{- end }}
{{- end }}
{{- if and (eq $node.network "custom") (not .Values.healthEndpoint.network) .Values.healthEndpoint.enabled }}
{{- fail "healthEndpoint.network is required with node.network custom: a network defined in healthEndpoint.checks" }}
{{- end }}
{{- end }}
{{/* <<< node bootstrap per network */}}
