{{/* Names and labels. */}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keyward.fullname" -}}
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

{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with (get . "component") }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "keyward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: keyward
{{- end -}}

{{- define "keyward.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "keyward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keyward.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "keyward.secretName" -}}
{{- default (include "keyward.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "keyward.migrationSecretName" -}}
{{- if .Values.existingSecret -}}
{{- default .Values.existingSecret .Values.existingMigrationSecret -}}
{{- else -}}
{{- printf "%s-migration" (include "keyward.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* True when Vault's Kubernetes auth is in use. */}}
{{- define "keyward.vaultKubernetes" -}}
{{- if and (eq .Values.secretStore "vault") (eq .Values.vault.auth "kubernetes") -}}true{{- end -}}
{{- end -}}

{{/*
The non-secret settings, as a map of variable name to value: the ConfigMap's data, and the
environment of the migration Job (which, as a pre-install hook, runs before the ConfigMap
exists).
*/}}
{{- define "keyward.config" -}}
{{- $c := dict
  "KEYWARD_PRODUCTION" "true"
  "KEYWARD_DEBUG" "false"
  "KEYWARD_LOG_LEVEL" .Values.config.logLevel
  "KEYWARD_LOG_FORMAT" .Values.config.logFormat
  "KEYWARD_BEHIND_TLS_PROXY" (ternary "true" "false" .Values.config.behindTlsProxy)
  "KEYWARD_TRUSTED_PROXY_COUNT" (toString .Values.config.trustedProxyCount)
  "KEYWARD_DB_APP_ROLE" .Values.database.appRole
  "KEYWARD_SECRET_STORE" .Values.secretStore
-}}
{{- with .Values.config.csrfTrustedOrigins }}
{{- $_ := set $c "KEYWARD_CSRF_TRUSTED_ORIGINS" (join "," .) }}
{{- end }}
{{- if eq .Values.secretStore "vault" }}
{{- $_ := set $c "KEYWARD_VAULT_ADDR" .Values.vault.addr }}
{{- $_ := set $c "KEYWARD_VAULT_AUTH" .Values.vault.auth }}
{{- $_ := set $c "KEYWARD_VAULT_KV_MOUNT" .Values.vault.kvMount }}
{{- $_ := set $c "KEYWARD_VAULT_TRANSIT_MOUNT" .Values.vault.transitMount }}
{{- $_ := set $c "KEYWARD_VAULT_PATH_PREFIX" .Values.vault.pathPrefix }}
{{- $_ := set $c "KEYWARD_VAULT_TIMEOUT_MS" (toString .Values.vault.timeoutMs) }}
{{- with .Values.vault.namespace }}
{{- $_ := set $c "KEYWARD_VAULT_NAMESPACE" . }}
{{- end }}
{{- if .Values.vault.caCert.configMap }}
{{- $_ := set $c "KEYWARD_VAULT_CACERT" (printf "/etc/keyward/vault-ca/%s" .Values.vault.caCert.key) }}
{{- end }}
{{- if eq .Values.vault.auth "approle" }}
{{- $_ := set $c "KEYWARD_VAULT_ROLE_ID" .Values.vault.approle.roleId }}
{{- $_ := set $c "KEYWARD_VAULT_APPROLE_MOUNT" .Values.vault.approle.mount }}
{{- end }}
{{- if eq .Values.vault.auth "kubernetes" }}
{{- $_ := set $c "KEYWARD_VAULT_K8S_ROLE" .Values.vault.kubernetes.role }}
{{- $_ := set $c "KEYWARD_VAULT_K8S_MOUNT" .Values.vault.kubernetes.mount }}
{{- if .Values.vault.kubernetes.audience }}
{{- $_ := set $c "KEYWARD_VAULT_K8S_JWT_PATH" "/var/run/secrets/vault/token" }}
{{- end }}
{{- end }}
{{- end }}
{{- $audit := .Values.audit }}
{{- with $audit.origin }}
{{- $_ := set $c "KEYWARD_AUDIT_ORIGIN" . }}
{{- end }}
{{- $_ := set $c "KEYWARD_SCHEDULE_SIGN_CHECKPOINTS" (toString $audit.signIntervalSeconds) }}
{{- if $audit.witnesses }}
{{- $pairs := list }}
{{- range $audit.witnesses }}
{{- $pairs = append $pairs (printf "%s %s" .key .url) }}
{{- end }}
{{- $_ := set $c "KEYWARD_AUDIT_WITNESSES" (join "," $pairs) }}
{{- $_ := set $c "KEYWARD_AUDIT_WITNESS_QUORUM" (toString $audit.witnessQuorum) }}
{{- $_ := set $c "KEYWARD_AUDIT_WITNESS_TIMEOUT_MS" (toString $audit.witnessTimeoutMs) }}
{{- end }}
{{- /* JSON Schema cannot compare a number with an array's length. */}}
{{- if gt (int $audit.witnessQuorum) (len $audit.witnesses) }}
{{- fail (printf "audit.witnessQuorum: %d, more than the %d witnesses of audit.witnesses" (int $audit.witnessQuorum) (len $audit.witnesses)) }}
{{- end }}
{{- $bucket := $audit.checkpointBucket }}
{{- if $bucket.url }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_URL" $bucket.url }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_TIMEOUT_MS" (toString $bucket.timeoutMs) }}
{{- with $bucket.endpoint }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT" . }}
{{- end }}
{{- with $bucket.region }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_REGION" . }}
{{- end }}
{{- with $bucket.accessKeyId }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID" . }}
{{- end }}
{{- if $bucket.caCert.configMap }}
{{- $_ := set $c "KEYWARD_AUDIT_CHECKPOINT_S3_CACERT" (printf "/etc/keyward/checkpoint-s3-ca/%s" $bucket.caCert.key) }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.config.extraEnv }}
{{- $_ := set $c $name (toString $value) }}
{{- end }}
{{- toYaml $c }}
{{- end -}}

{{/* True when the checkpoint bucket's CA bundle is mounted. */}}
{{- define "keyward.checkpointCA" -}}
{{- $bucket := .Values.audit.checkpointBucket -}}
{{- if and $bucket.url $bucket.caCert.configMap -}}true{{- end -}}
{{- end -}}

{{/* The TCP port an http(s) URL names, else its scheme's (443 for https, 80 for http). */}}
{{- define "keyward.urlPort" -}}
{{- $url := urlParse . -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $url.host) -}}
{{- $port | default (ternary "443" "80" (eq $url.scheme "https")) -}}
{{- end -}}

{{/*
The egress rules of the audit witnesses and the checkpoint bucket, as a list of
{name, ports, to}, each towards its own peers or else the HTTPS rule's (public addresses).
*/}}
{{- define "keyward.auditEgress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- $bucket := .Values.audit.checkpointBucket -}}
{{- $ports := dict "witnesses" (list) "checkpointBucket" (list) -}}
{{- range .Values.audit.witnesses -}}
{{- $_ := set $ports "witnesses" (append $ports.witnesses (include "keyward.urlPort" .url | int)) -}}
{{- end -}}
{{- if and $bucket.url $bucket.endpoint -}}
{{- $_ := set $ports "checkpointBucket" (list (include "keyward.urlPort" $bucket.endpoint | int)) -}}
{{- else if $bucket.url -}}
{{- $_ := set $ports "checkpointBucket" (list 443) -}}{{/* AWS S3 */}}
{{- end -}}
{{- $rules := list -}}
{{- range $name := list "witnesses" "checkpointBucket" -}}
{{- with index $ports $name -}}
{{- $to := (index $egress $name).to | default $egress.https.to -}}
{{- $rules = append $rules (dict "name" $name "ports" (uniq .) "to" $to) -}}
{{- end -}}
{{- end -}}
{{- toJson $rules -}}
{{- end -}}

{{/*
Each secret variable the pods read, as a list of [variable, key in the Secret]; the
migration Job reads the migration role's database URL instead of the application's.
*/}}
{{- define "keyward.secretVariables" -}}
{{- $v := .root.Values -}}
{{- $list := list (list "KEYWARD_SECRET_KEY" "secret-key") (list "KEYWARD_PEPPERS" "peppers") (list "KEYWARD_AUDIT_HMAC_KEY" "audit-hmac-key") (list "KEYWARD_BROKER_URL" "broker-url") -}}
{{- if (get . "migration") -}}
{{- $list = append $list (list "KEYWARD_DATABASE_URL" "database-migration-url") -}}
{{- else -}}
{{- $list = append $list (list "KEYWARD_DATABASE_URL" "database-url") -}}
{{- end -}}
{{- if or (eq $v.secretStore "local") (and $v.extraSecretStores.enabled $v.extraSecretStores.local) -}}
{{- $list = append $list (list "KEYWARD_MASTER_KEYS" "master-keys") -}}
{{- end -}}
{{- if and (eq $v.secretStore "vault") (eq $v.vault.auth "token") -}}
{{- $list = append $list (list "KEYWARD_VAULT_TOKEN" "vault-token") -}}
{{- end -}}
{{- if and (eq $v.secretStore "vault") (eq $v.vault.auth "approle") -}}
{{- $list = append $list (list "KEYWARD_VAULT_SECRET_ID" "vault-secret-id") -}}
{{- end -}}
{{- if $v.redis.enabled -}}
{{- $list = append $list (list "KEYWARD_REDIS_URL" "redis-url") -}}
{{- end -}}
{{- if $v.webhooks.enabled -}}
{{- $list = append $list (list "KEYWARD_WEBHOOKS" "webhooks") -}}
{{- end -}}
{{- if $v.extraSecretStores.enabled -}}
{{- $list = append $list (list "KEYWARD_SECRET_STORES" "secret-stores") -}}
{{- end -}}
{{- if and $v.audit.checkpointBucket.url $v.audit.checkpointBucket.accessKeyId -}}
{{- $list = append $list (list "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY" "audit-checkpoint-s3-secret-access-key") -}}
{{- end -}}
{{- toJson $list -}}
{{- end -}}

{{/*
The data of the chart's own Secrets (when no existingSecret), computed once per render:
given values first, then values kept in the Secret from an earlier release, then newly
generated ones.
*/}}
{{- define "keyward.secretData" -}}
{{- if not (hasKey .Release "keywardSecretData") -}}
{{- $v := .Values -}}
{{- $previous := dict -}}
{{- with (lookup "v1" "Secret" .Release.Namespace (include "keyward.fullname" .)) -}}
{{- $previous = .data | default dict -}}
{{- end -}}
{{- $given := dict
  "secret-key" $v.secrets.secretKey
  "peppers" $v.secrets.peppers
  "audit-hmac-key" $v.secrets.auditHmacKey
  "master-keys" $v.secrets.masterKeys
  "database-url" $v.database.url
  "database-migration-url" $v.database.migrationUrl
  "broker-url" $v.broker.url
  "vault-token" $v.vault.token
  "vault-secret-id" $v.vault.approle.secretId
  "redis-url" $v.redis.url
  "webhooks" $v.webhooks.json
  "secret-stores" $v.extraSecretStores.json
  "audit-checkpoint-s3-secret-access-key" $v.secrets.checkpointBucketSecretAccessKey
-}}
{{- $generators := dict
  "secret-key" (randAlphaNum 64)
  "peppers" (printf "1:%s" (randAlphaNum 48))
  "audit-hmac-key" (randAlphaNum 64)
-}}
{{- if or (eq $v.secretStore "local") (and $v.extraSecretStores.enabled $v.extraSecretStores.local) -}}
{{- $_ := set $generators "master-keys" (printf "1:%s" (randBytes 32)) -}}
{{- end -}}
{{- $data := dict -}}
{{- range $key, $value := $given -}}
{{- if $value -}}
{{- $_ := set $data $key $value -}}
{{- else if hasKey $previous $key -}}
{{- $_ := set $data $key (index $previous $key | b64dec) -}}
{{- else if and $v.secrets.generate (hasKey $generators $key) -}}
{{- $_ := set $data $key (index $generators $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Release "keywardSecretData" $data -}}
{{- end -}}
{{- toJson .Release.keywardSecretData -}}
{{- end -}}

{{/* A projected volume of the secret files a pod reads (KEYWARD_<NAME>_FILE). */}}
{{- define "keyward.secretVolume" -}}
{{- $root := .root -}}
{{- $variables := include "keyward.secretVariables" . | fromJsonArray -}}
{{- $available := dict -}}
{{- if not $root.Values.existingSecret -}}
{{- $available = include "keyward.secretData" $root | fromJson -}}
{{- end -}}
{{- $main := list -}}
{{- $migration := list -}}
{{- range $variables -}}
{{- $key := index . 1 -}}
{{- if or $root.Values.existingSecret (hasKey $available $key) -}}
{{- if eq $key "database-migration-url" -}}
{{- $migration = append $migration $key -}}
{{- else -}}
{{- $main = append $main $key -}}
{{- end -}}
{{- end -}}
{{- end -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if $main }}
      - secret:
          {{- if and (get . "migration") (not $root.Values.existingSecret) }}
          name: {{ include "keyward.migrationSecretName" $root }}
          {{- else }}
          name: {{ include "keyward.secretName" $root }}
          {{- end }}
          items:
            {{- range $main }}
            - key: {{ . }}
              path: {{ . }}
            {{- end }}
      {{- end }}
      {{- if $migration }}
      - secret:
          name: {{ include "keyward.migrationSecretName" $root }}
          items:
            {{- range $migration }}
            - key: {{ . }}
              path: {{ . }}
            {{- end }}
      {{- end }}
{{- end -}}

{{/* The environment variables naming the secret files. */}}
{{- define "keyward.secretEnv" -}}
{{- $root := .root -}}
{{- $available := dict -}}
{{- if not $root.Values.existingSecret -}}
{{- $available = include "keyward.secretData" $root | fromJson -}}
{{- end -}}
{{- range include "keyward.secretVariables" . | fromJsonArray }}
{{- if or $root.Values.existingSecret (hasKey $available (index . 1)) }}
- name: {{ index . 0 }}_FILE
  value: /run/secrets/keyward/{{ index . 1 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of every container: the pod IP among the allowed hosts, and the secrets. */}}
{{- define "keyward.env" -}}
{{- $hosts := join "," .root.Values.config.allowedHosts -}}
{{- if .root.Values.config.allowedHostsIncludePodIP }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- $hosts = printf "%s,$(POD_IP)" $hosts }}
{{- end }}
- name: KEYWARD_ALLOWED_HOSTS
  value: {{ $hosts | quote }}
{{- include "keyward.secretEnv" . }}
{{- end -}}

{{/* Volumes every pod has: /tmp, the secrets, Vault's and the checkpoint bucket's CAs and
Vault's token when used. */}}
{{- define "keyward.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
{{ include "keyward.secretVolume" . }}
{{- if and (eq $v.secretStore "vault") $v.vault.caCert.configMap }}
- name: vault-ca
  configMap:
    name: {{ $v.vault.caCert.configMap }}
    items:
      - key: {{ $v.vault.caCert.key }}
        path: {{ $v.vault.caCert.key }}
{{- end }}
{{- if include "keyward.checkpointCA" .root }}
- name: checkpoint-s3-ca
  configMap:
    name: {{ $v.audit.checkpointBucket.caCert.configMap }}
    items:
      - key: {{ $v.audit.checkpointBucket.caCert.key }}
        path: {{ $v.audit.checkpointBucket.caCert.key }}
{{- end }}
{{- if and (include "keyward.vaultKubernetes" .root) $v.vault.kubernetes.audience (not (get . "migration")) }}
- name: vault-token
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ $v.vault.kubernetes.audience }}
          expirationSeconds: {{ $v.vault.kubernetes.expirationSeconds }}
{{- end }}
{{- end -}}

{{- define "keyward.volumeMounts" -}}
{{- $v := .root.Values -}}
- name: tmp
  mountPath: /tmp
- name: secrets
  mountPath: /run/secrets/keyward
  readOnly: true
{{- if and (eq $v.secretStore "vault") $v.vault.caCert.configMap }}
- name: vault-ca
  mountPath: /etc/keyward/vault-ca
  readOnly: true
{{- end }}
{{- if include "keyward.checkpointCA" .root }}
- name: checkpoint-s3-ca
  mountPath: /etc/keyward/checkpoint-s3-ca
  readOnly: true
{{- end }}
{{- if and (include "keyward.vaultKubernetes" .root) $v.vault.kubernetes.audience (not (get . "migration")) }}
- name: vault-token
  mountPath: /var/run/secrets/vault
  readOnly: true
{{- end }}
{{- end -}}

{{/* Mount the ordinary service-account token only for Vault's Kubernetes auth without a
projected audience token. */}}
{{- define "keyward.automountToken" -}}
{{- if and (include "keyward.vaultKubernetes" .) (not .Values.vault.kubernetes.audience) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{- define "keyward.checksums" -}}
checksum/config: {{ include "keyward.config" . | sha256sum }}
{{- if .Values.existingSecret }}
checksum/secret: {{ printf "%s/%s" .Values.existingSecret (default "" .Values.existingMigrationSecret) | sha256sum }}
{{- else }}
checksum/secret: {{ include "keyward.secretData" . | sha256sum }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload. */}}
{{- define "keyward.podSpecCommon" -}}
{{- $v := .Values -}}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
