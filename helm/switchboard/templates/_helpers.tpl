{{/*
Names, labels and the pieces of the pods' command lines shared by the templates.
*/}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every resource. Kept at most 40 characters so that
"<fullname>-store-headless" and the pod names under it stay valid DNS labels.
*/}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{/* The StatefulSet that holds the store voters: the store (cluster) or the serve nodes (allInOne). */}}
{{- define "switchboard.votersName" -}}
{{- if eq .Values.mode "allInOne" -}}
{{ include "switchboard.fullname" . }}-server
{{- else -}}
{{ include "switchboard.fullname" . }}-store
{{- end }}
{{- end }}

{{- define "switchboard.votersHeadless" -}}
{{ include "switchboard.votersName" . }}-headless
{{- end }}

{{/* Component label of the voters' pods. */}}
{{- define "switchboard.votersComponent" -}}
{{- if eq .Values.mode "allInOne" }}server{{ else }}store{{ end }}
{{- end }}

{{/* The pods the client Service sends traffic to. */}}
{{- define "switchboard.clientComponent" -}}
{{- if eq .Values.mode "allInOne" }}server{{ else }}gateway{{ end }}
{{- end }}

{{- define "switchboard.votersReplicas" -}}
{{- if eq .Values.mode "allInOne" }}{{ .Values.allInOne.replicas | int }}{{ else }}{{ .Values.store.replicas | int }}{{ end }}
{{- end }}

{{/* The stable DNS name of voter $i: <sts>-<i>.<headless>.<ns>.svc.<domain>. */}}
{{- define "switchboard.voterHost" -}}
{{- $ := index . 0 -}}
{{- $i := index . 1 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "switchboard.votersName" $) (int $i) (include "switchboard.votersHeadless" $) $.Release.Namespace $.Values.clusterDomain -}}
{{- end }}

{{/* The voters the cluster was installed with (`initialReplicas`, else `replicas`): the
--peers every voter starts with. Voters beyond them join with --join. */}}
{{- define "switchboard.initialVoters" -}}
{{- $v := ternary .Values.allInOne .Values.store (eq .Values.mode "allInOne") -}}
{{- if $v.initialReplicas }}{{ min ($v.initialReplicas | int) ($v.replicas | int) }}{{ else }}{{ $v.replicas | int }}{{ end }}
{{- end }}

{{/* --peers: 1=<voter 0>:7000,2=<voter 1>:7000,... (node id = ordinal + 1), the initial voters. */}}
{{- define "switchboard.peers" -}}
{{- $peers := list -}}
{{- range $i := until (include "switchboard.initialVoters" . | int) -}}
{{- $peers = append $peers (printf "%d=%s:%d" (add1 $i) (include "switchboard.voterHost" (list $ $i)) (int $.Values.ports.cluster)) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end }}

{{/* --store: <voter 0>:7000,<voter 1>:7000,... */}}
{{- define "switchboard.storeAddresses" -}}
{{- $addrs := list -}}
{{- range $i := until (include "switchboard.votersReplicas" . | int) -}}
{{- $addrs = append $addrs (printf "%s:%d" (include "switchboard.voterHost" (list $ $i)) (int $.Values.ports.cluster)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end }}

{{/* --join: the initial voters' cluster addresses (used by voters --peers does not list). */}}
{{- define "switchboard.joinAddresses" -}}
{{- $addrs := list -}}
{{- range $i := until (include "switchboard.initialVoters" . | int) -}}
{{- $addrs = append $addrs (printf "%s:%d" (include "switchboard.voterHost" (list $ $i)) (int $.Values.ports.cluster)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end }}

{{/* --advertise of a voter: its own stable DNS name ($(POD_NAME) is expanded by the kubelet). */}}
{{- define "switchboard.voterAdvertise" -}}
{{- printf "$(POD_NAME).%s.%s.svc.%s:%d" (include "switchboard.votersHeadless" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.cluster) -}}
{{- end }}

{{- define "switchboard.secretName" -}}
{{- if .Values.accessKey.existingSecret }}{{ .Values.accessKey.existingSecret }}{{ else }}{{ include "switchboard.fullname" . }}-access-key{{ end }}
{{- end }}

{{/* The Secret of the cluster keys, when `clusterKey` is set (empty otherwise). */}}
{{- define "switchboard.clusterKeySecretName" -}}
{{- if .Values.clusterKey.existingSecret }}{{ .Values.clusterKey.existingSecret }}
{{- else if .Values.clusterKey.value }}{{ include "switchboard.fullname" . }}-cluster-key
{{- end }}
{{- end }}

{{/* The Secret of the upstream templates, when `upstream` has any (empty otherwise). */}}
{{- define "switchboard.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}
{{- else }}{{ include "switchboard.fullname" . }}-redis
{{- end }}
{{- end }}

{{/* Whether the Raft voters are deployed (the raft engine, or allInOne). */}}
{{- define "switchboard.hasVoters" -}}
{{- if or (eq .Values.mode "allInOne") (ne .Values.engine "redis") }}true{{ end }}
{{- end }}

{{- define "switchboard.upstreamSecretName" -}}
{{- if .Values.upstream.existingSecret }}{{ .Values.upstream.existingSecret }}
{{- else if .Values.upstream.templates }}{{ include "switchboard.fullname" . }}-upstream
{{- end }}
{{- end }}

{{/*
Where the Secrets are mounted (read-only, whole volumes: a subPath mount would never see an
updated Secret). The environment points the processes at these files.
*/}}
{{- define "switchboard.clusterKeyFile" -}}/etc/switchboard/cluster-key/cluster-key{{- end }}
{{- define "switchboard.clusterTLSDir" -}}/etc/switchboard/cluster-tls{{- end }}
{{- define "switchboard.tlsDir" -}}/etc/switchboard/tls{{- end }}
{{- define "switchboard.upstreamFile" -}}/etc/switchboard/upstream/upstream.json{{- end }}

{{/* Scheme of the HTTP port: http, or https with `tls.enabled`. */}}
{{- define "switchboard.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Refuses values that cannot work. */}}
{{- define "switchboard.validate" -}}
{{- if not (has .Values.mode (list "cluster" "allInOne")) }}
{{- fail (printf "mode must be \"cluster\" or \"allInOne\", not %q" (toString .Values.mode)) }}
{{- end }}
{{- if not (has .Values.engine (list "raft" "redis")) }}
{{- fail (printf "engine must be \"raft\" or \"redis\", not %q" (toString .Values.engine)) }}
{{- end }}
{{- if and (eq .Values.engine "redis") (eq .Values.mode "allInOne") }}
{{- fail "engine: redis needs mode: cluster (allInOne nodes embed the Raft voters)" }}
{{- end }}
{{- if and (eq .Values.engine "redis") (not .Values.redis.url) (not .Values.redis.existingSecret) }}
{{- fail "engine: redis needs redis.url or redis.existingSecret" }}
{{- end }}
{{- $s := .Values.shutdown }}
{{- if le (int $s.terminationGracePeriodSeconds) (add (int $s.preStopSleepSeconds) (int $s.shutdownGraceSeconds) | int) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + shutdownGraceSeconds (%d)" (int $s.terminationGracePeriodSeconds) (add (int $s.preStopSleepSeconds) (int $s.shutdownGraceSeconds))) }}
{{- end }}
{{- if lt (include "switchboard.votersReplicas" . | int) 1 }}
{{- fail "the number of store voters (store.replicas or allInOne.replicas) must be at least 1" }}
{{- end }}
{{- if and (eq .Values.mode "cluster") .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail "logFormat must be \"json\" or \"text\"" }}
{{- end }}
{{- if lt (int .Values.connections.lease) 3 }}
{{- fail "connections.lease must be at least 3 seconds" }}
{{- end }}
{{- if or (lt (int64 .Values.store.snapshotEvery) 1) (lt (int64 .Values.allInOne.snapshotEvery) 1) }}
{{- fail "snapshotEvery must be at least 1" }}
{{- end }}
{{- if lt (int .Values.connections.connectionTokenLifetime) 1 }}
{{- fail "connections.connectionTokenLifetime must be at least 1 second" }}
{{- end }}
{{- if and (not (empty .Values.connections.maxConnections)) (lt (int64 .Values.connections.maxConnections) 1) }}
{{- fail "connections.maxConnections must be empty (the binary's default) or at least 1" }}
{{- end }}
{{- if or (lt (int .Values.http.headerTimeout) 1) (lt (int .Values.http.idleTimeout) 1) }}
{{- fail "http.headerTimeout and http.idleTimeout must be at least 1 second" }}
{{- end }}
{{- if and .Values.clusterTLS.enabled (not .Values.clusterTLS.secretName) }}
{{- fail "clusterTLS.secretName (a Secret with tls.crt, tls.key and ca.crt) is required when clusterTLS.enabled" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName (a Secret with tls.crt and tls.key) is required when tls.enabled" }}
{{- end }}
{{- if lt (int .Values.upstream.timeout) 1 }}
{{- fail "upstream.timeout must be at least 1 second" }}
{{- end }}
{{- if not (kindIs "slice" (.Values.upstream.templates | default list)) }}
{{- fail "upstream.templates must be a list of templates ({urlTemplate, hubPattern, categoryPattern, eventPattern})" }}
{{- end }}
{{- range $i, $t := .Values.upstream.templates | default list }}
{{- if not (kindIs "map" $t) }}
{{- fail (printf "upstream.templates[%d] must be a map with urlTemplate" $i) }}
{{- end }}
{{- range $k, $_ := $t }}
{{- if not (has $k (list "urlTemplate" "hubPattern" "categoryPattern" "eventPattern" "auth")) }}
{{- fail (printf "upstream.templates[%d]: unknown setting %q (expected urlTemplate, hubPattern, categoryPattern, eventPattern, auth)" $i $k) }}
{{- end }}
{{- end }}
{{- $url := index $t "urlTemplate" }}
{{- if not (and (kindIs "string" $url) (regexMatch "^https?://[^/?#]" ($url | default ""))) }}
{{- fail (printf "upstream.templates[%d].urlTemplate must be an http:// or https:// URL" $i) }}
{{- end }}
{{- range $p := list "hubPattern" "categoryPattern" "eventPattern" }}
{{- if and (hasKey $t $p) (not (and (kindIs "string" (index $t $p)) (trim (index $t $p)))) }}
{{- fail (printf "upstream.templates[%d].%s must be a non-empty string (*, a name or a comma-separated list)" $i $p) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The NetworkPolicy tells the ports apart by number. */}}
{{- $ports := list (int .Values.ports.http) (int .Values.ports.cluster) }}
{{- if eq .Values.mode "cluster" }}{{ $ports = append $ports (int .Values.ports.gatewayCluster) }}{{ end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail "ports.http, ports.cluster and ports.gatewayCluster must differ" }}
{{- end }}
{{- end }}

{{/* Environment shared by every container. */}}
{{- define "switchboard.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
# Gateways and serve nodes check tokens with the access keys; without a cluster key, every
# process also proves them to the others on the cluster listener.
- name: SWITCHBOARD_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: {{ .Values.accessKey.secretKey }}
{{- if include "switchboard.clusterKeySecretName" . }}
# The cluster plane proves this key instead, read from the mounted Secret.
- name: SWITCHBOARD_CLUSTER_KEY_FILE
  value: {{ include "switchboard.clusterKeyFile" . }}
{{- end }}
{{- if .Values.clusterTLS.enabled }}
- name: SWITCHBOARD_CLUSTER_TLS_CERT
  value: {{ include "switchboard.clusterTLSDir" . }}/tls.crt
- name: SWITCHBOARD_CLUSTER_TLS_KEY
  value: {{ include "switchboard.clusterTLSDir" . }}/tls.key
- name: SWITCHBOARD_CLUSTER_TLS_CA
  value: {{ include "switchboard.clusterTLSDir" . }}/ca.crt
{{- end }}
{{- if .Values.tls.enabled }}
- name: SWITCHBOARD_TLS_CERT
  value: {{ include "switchboard.tlsDir" . }}/tls.crt
- name: SWITCHBOARD_TLS_KEY
  value: {{ include "switchboard.tlsDir" . }}/tls.key
{{- end }}
- name: SWITCHBOARD_HTTP_HEADER_TIMEOUT
  value: {{ .Values.http.headerTimeout | int | quote }}
- name: SWITCHBOARD_HTTP_IDLE_TIMEOUT
  value: {{ .Values.http.idleTimeout | int | quote }}
- name: SWITCHBOARD_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.logFilter }}
- name: SWITCHBOARD_LOG
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Mounts of the Secrets every container reads (see the volumes below). */}}
{{- define "switchboard.secretMounts" -}}
{{- if include "switchboard.clusterKeySecretName" . }}
- name: cluster-key
  mountPath: {{ include "switchboard.clusterKeyFile" . | dir }}
  readOnly: true
{{- end }}
{{- if .Values.clusterTLS.enabled }}
- name: cluster-tls
  mountPath: {{ include "switchboard.clusterTLSDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "switchboard.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The Secret volumes of every pod. Only the keys the processes read are projected, so a missing
one (say, a TLS Secret without ca.crt) keeps the pod from starting with a clear event.
*/}}
{{- define "switchboard.secretVolumes" -}}
{{- with include "switchboard.clusterKeySecretName" . }}
- name: cluster-key
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.clusterKey.secretKey }}
        path: {{ include "switchboard.clusterKeyFile" $ | base }}
{{- end }}
{{- if .Values.clusterTLS.enabled }}
- name: cluster-tls
  secret:
    secretName: {{ .Values.clusterTLS.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}

{{/*
Pod annotations that restart the pods when a chart-managed key Secret changes: the processes read
the keys at start, and every one of them proves them on the cluster plane.
*/}}
{{- define "switchboard.keyChecksums" -}}
checksum/access-key: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- if and .Values.clusterKey.value (not .Values.clusterKey.existingSecret) }}
checksum/cluster-key: {{ include (print .Template.BasePath "/cluster-key-secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Environment of the processes that hold client connections (gateways, serve nodes): the flags of
`switchboard gateway` and `switchboard serve` that `switchboard store` does not take.
*/}}
{{- define "switchboard.clientEnv" -}}
# Logs are collected: keep the access key out of them (NOTES.txt shows how to read it).
- name: SWITCHBOARD_PRINT_CONNECTION_STRING
  value: "false"
- name: SWITCHBOARD_SHUTDOWN_GRACE
  value: {{ .Values.shutdown.shutdownGraceSeconds | int | quote }}
- name: SWITCHBOARD_LEASE
  value: {{ .Values.connections.lease | int | quote }}
- name: SWITCHBOARD_KEEP_ALIVE_INTERVAL
  value: {{ .Values.connections.keepAliveInterval | int | quote }}
- name: SWITCHBOARD_CLIENT_TIMEOUT
  value: {{ .Values.connections.clientTimeout | int | quote }}
- name: SWITCHBOARD_HANDSHAKE_TIMEOUT
  value: {{ .Values.connections.handshakeTimeout | int | quote }}
- name: SWITCHBOARD_MAX_QUEUED_MESSAGES
  value: {{ .Values.connections.maxQueuedMessages | int64 | quote }}
- name: SWITCHBOARD_MAX_QUEUED_BYTES
  value: {{ .Values.connections.maxQueuedBytes | int64 | quote }}
- name: SWITCHBOARD_CONNECTION_TOKEN_LIFETIME
  value: {{ .Values.connections.connectionTokenLifetime | int | quote }}
- name: SWITCHBOARD_UPSTREAM_TIMEOUT
  value: {{ .Values.upstream.timeout | int | quote }}
{{- if .Values.admin.enabled }}
- name: SWITCHBOARD_ADMIN
  value: "true"
{{- end }}
{{- with .Values.connections.maxConnections }}
- name: SWITCHBOARD_MAX_CONNECTIONS
  value: {{ . | int64 | quote }}
{{- end }}
{{- end }}

{{/*
The upstream of the processes that hold client connections (gateways, serve nodes): the
templates' Secret, mounted read-only as a whole volume (no subPath), and the flag naming the file.
The URLs may carry keys: they are in no variable or argument, only in the Secret.
*/}}
{{- define "switchboard.upstreamArgs" -}}
{{- if include "switchboard.upstreamSecretName" . }}
- --upstream-config
- {{ include "switchboard.upstreamFile" . }}
{{- end }}
{{- end }}

{{- define "switchboard.upstreamMount" -}}
{{- if include "switchboard.upstreamSecretName" . }}
- name: upstream
  mountPath: {{ include "switchboard.upstreamFile" . | dir }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "switchboard.upstreamVolume" -}}
{{- with include "switchboard.upstreamSecretName" . }}
- name: upstream
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.upstream.secretKey }}
        path: {{ include "switchboard.upstreamFile" $ | base }}
{{- end }}
{{- end }}

{{/* The upstream file is read at start: a chart-managed upstream Secret that changes restarts the pods. */}}
{{- define "switchboard.upstreamChecksum" -}}
{{- if and .Values.upstream.templates (not .Values.upstream.existingSecret) }}
checksum/upstream: {{ include (print .Template.BasePath "/upstream-secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Probes, lifecycle and security of every container. Called with (list $ <holds clients>): only
pods behind the client Service (gateways, serve nodes) get the preStop sleep that lets Services
and ingresses drop them before SIGTERM; store voters take no client traffic and stop at once.
*/}}
{{- define "switchboard.containerCommon" -}}
{{- $clients := index . 1 -}}
{{- with index . 0 -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
startupProbe:
  httpGet:
    path: /api/health
    port: http
    scheme: {{ include "switchboard.scheme" . | upper }}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /api/health
    port: http
    scheme: {{ include "switchboard.scheme" . | upper }}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
    scheme: {{ include "switchboard.scheme" . | upper }}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- if $clients }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ .Values.shutdown.preStopSleepSeconds | int }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod. */}}
{{- define "switchboard.podCommon" -}}
serviceAccountName: {{ include "switchboard.serviceAccountName" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .Values.shutdown.terminationGracePeriodSeconds | int }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling of a pod: node selector, tolerations, spread, priority, and affinity (a preferred
anti-affinity over nodes when none is given). Called with (list $ <component values> <component>).
*/}}
{{- define "switchboard.scheduling" -}}
{{- $ := index . 0 -}}
{{- $v := index . 1 -}}
{{- $component := index . 2 -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
affinity:
{{- if $v.affinity }}
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "switchboard.selectorLabels" $ | nindent 14 }}
              app.kubernetes.io/component: {{ $component }}
{{- end }}
{{- end }}
