{{/*
The chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "ferrohsm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource: the release name, with the chart name unless the release
name already contains it.
*/}}
{{- define "ferrohsm.fullname" -}}
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

{{- define "ferrohsm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferrohsm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrohsm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferrohsm.labels" -}}
helm.sh/chart: {{ include "ferrohsm.chart" . }}
{{ include "ferrohsm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: ferrohsm
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferrohsm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrohsm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrohsm.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The names of the Secrets the chart expects to exist. */}}
{{- define "ferrohsm.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "ferrohsm.fullname" .)) }}
{{- end }}

{{- define "ferrohsm.masterKeySecret" -}}
{{- .Values.masterKey.existingSecret | default (printf "%s-master-key" (include "ferrohsm.fullname" .)) }}
{{- end }}

{{- define "ferrohsm.databaseSecret" -}}
{{- .Values.postgres.existingSecret | default (printf "%s-database" (include "ferrohsm.fullname" .)) }}
{{- end }}

{{- define "ferrohsm.pvcName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "ferrohsm.fullname" .)) }}
{{- end }}

{{/* "true" when the store lives on the persistent volume (filesystem or SQLite). */}}
{{- define "ferrohsm.usesVolume" -}}
{{- if has .Values.keyStore (list "filesystem" "sqlite") }}true{{ end }}
{{- end }}

{{/* The probe mechanism: httpGet or exec (probes.type auto picks exec for clientAuth required). */}}
{{- define "ferrohsm.probeType" -}}
{{- if eq .Values.probes.type "auto" }}
{{- if eq .Values.tls.clientAuth "required" }}exec{{ else }}httpGet{{ end }}
{{- else }}
{{- .Values.probes.type }}
{{- end }}
{{- end }}

{{/*
One probe: the handler of the chosen type and the timing of `probe` (probes.liveness, …).
Called with (dict "root" $ "probe" .Values.probes.liveness).
*/}}
{{- define "ferrohsm.probe" -}}
{{- $root := .root }}
{{- $probe := .probe }}
{{- if eq (include "ferrohsm.probeType" $root) "exec" }}
exec:
  command:
    - /usr/local/bin/ferrohsm-server
    - healthcheck
    - --url
    - {{ printf "https://127.0.0.1:%d%s" (int $root.Values.service.port) $probe.path | quote }}
    # A second less than the kubelet waits, so the probe reports why before it is killed.
    - --timeout
    - {{ printf "%ds" (max 1 (sub (int $probe.timeoutSeconds) 1)) | quote }}
    {{- if $root.Values.probes.exec.clientCertSecret }}
    - --client-cert
    - /etc/ferrohsm/probe-tls/tls.crt
    - --client-key
    - /etc/ferrohsm/probe-tls/tls.key
    {{- end }}
    {{- range $root.Values.probes.exec.extraArgs }}
    - {{ . | quote }}
    {{- end }}
{{- else }}
httpGet:
  path: {{ $probe.path }}
  port: https
  scheme: HTTPS
{{- end }}
{{- with $probe.initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
periodSeconds: {{ $probe.periodSeconds }}
timeoutSeconds: {{ $probe.timeoutSeconds }}
failureThreshold: {{ $probe.failureThreshold }}
{{- end }}

{{/*
Refuses value combinations that cannot work; every template includes it, so `helm template`
and `helm install` fail early with the reason.
*/}}
{{- define "ferrohsm.validate" -}}
{{- $stores := list "filesystem" "sqlite" "postgres" }}
{{- if not (has .Values.keyStore $stores) }}
{{- fail (printf "keyStore must be one of %s (got %q)" (join ", " $stores) .Values.keyStore) }}
{{- end }}
{{- if and (include "ferrohsm.usesVolume" .) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount is %d, but keyStore=%s keeps the store on one ReadWriteOnce volume that only one server may write: use replicaCount=1, or keyStore=postgres for several replicas" (int .Values.replicaCount) .Values.keyStore) }}
{{- end }}
{{- if lt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be at least 1" }}
{{- end }}
{{- $auth := list "none" "optional" "required" }}
{{- if not (has .Values.tls.clientAuth $auth) }}
{{- fail (printf "tls.clientAuth must be one of %s (got %q)" (join ", " $auth) .Values.tls.clientAuth) }}
{{- end }}
{{- if and (ne .Values.tls.clientAuth "none") (not .Values.tls.clientCA.existingSecret) }}
{{- fail (printf "tls.clientAuth=%s needs tls.clientCA.existingSecret (the CA bundle that issues client certificates)" .Values.tls.clientAuth) }}
{{- end }}
{{- if not (has .Values.probes.type (list "auto" "httpGet" "exec")) }}
{{- fail (printf "probes.type must be auto, httpGet or exec (got %q)" .Values.probes.type) }}
{{- end }}
{{- if eq .Values.tls.clientAuth "required" }}
{{- if eq (include "ferrohsm.probeType" .) "httpGet" }}
{{- fail "probes.type=httpGet cannot work with tls.clientAuth=required: the kubelet presents no client certificate; use probes.type=exec (or auto)" }}
{{- end }}
{{- if not .Values.probes.exec.clientCertSecret }}
{{- fail "tls.clientAuth=required: the exec probes need probes.exec.clientCertSecret (a kubernetes.io/tls Secret with a client certificate the client CA issued)" }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.settings }}
{{- if has $key (list "listen" "key_store" "data_dir" "database_url" "master_key_file" "master_key" "pkcs11_pin" "tls_cert" "tls_key" "client_ca" "client_auth" "tls12" "keyset_file" "policy_file" "log_format") }}
{{- fail (printf "settings.%s is set by the chart or is secret (master_key maps to FERROHSM_MASTER_KEY_SOURCE, and key material stays out of values): use the chart's own value, or extraEnv with a secretKeyRef" $key) }}
{{- end }}
{{- if not (regexMatch "^[a-z][a-z0-9_]*$" $key) }}
{{- fail (printf "settings.%s: keys are configuration-file keys such as audit_retention_days" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.keyset.enabled (not .Values.keyset.existingSecret) (not .Values.keyset.content) }}
{{- fail "keyset.enabled needs keyset.content (or keyset.existingSecret)" }}
{{- end }}
{{- if and .Values.policy.enabled (not .Values.policy.content) }}
{{- fail "policy.enabled needs policy.content" }}
{{- end }}
{{- end }}
