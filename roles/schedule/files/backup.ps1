<#
.SYNOPSIS
    seawall-pgbackup on Windows: the users' backup.ps1 interface in front of the seawall-pgbackup engine.

.DESCRIPTION
    Installed by the seawall.pgbackup.schedule role into C:\ProgramData\seawall-pgbackup; its scheduled
    tasks run it under the dedicated backup account. Every action calls seawall-pgbackup.exe (the same
    engine as on Linux and in the Ansible modules) with the configuration file beside this script, whose
    databaseUrl holds no password: libpq reads it from the passfile beside it (PGPASSFILE).

.EXAMPLE
    .\backup.ps1 -Action create -BackupType full

.EXAMPLE
    .\backup.ps1 -Action create -BackupType incremental

.EXAMPLE
    .\backup.ps1 -Action restore -BackupPath "C:\ProgramData\seawall-pgbackup\backups\full\full-vtt-20261126T020000Z.json"

.EXAMPLE
    .\backup.ps1 -Action schedule
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidateSet('create', 'restore', 'schedule', 'cleanup', 'health', 'verify', 'list')]
    [string]$Action,

    # base: a physical base backup (pg_basebackup); incremental: since the newest base or incremental
    [ValidateSet('full', 'schema', 'data', 'globals', 'base', 'incremental')]
    [string]$BackupType = 'full',

    # restore: a backup id, a manifest or data file path, or 'latest'
    [string]$BackupPath = 'latest',

    # restore: the database to restore into (default: the configured database); no password here
    [string]$TargetUrl = '',

    [string]$Engine = 'C:\Program Files\seawall-pgbackup\Scripts\seawall-pgbackup.exe',

    [string]$Config = (Join-Path $PSScriptRoot 'config.json'),

    [string]$PassFile = (Join-Path $PSScriptRoot 'pgpass.conf'),

    [string]$TaskPath = '\seawall-pgbackup\'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# The engine's command line for each action (seawall-pgbackup SUBCOMMAND ...).
$ActionArguments = @{
    'create'  = @('create', '--type', $BackupType)
    'restore' = @('restore', $BackupPath)
    'cleanup' = @('cleanup')
    'health'  = @('health')
    'verify'  = @('verify', 'latest', '--type', $BackupType, '--level', 'archive')
    'list'    = @('list')
}

if ($Action -eq 'schedule') {
    # The scheduled tasks are managed by the seawall.pgbackup.schedule Ansible role (one task per job,
    # triggers from the cron schedules); this shows them and their last results.
    $tasks = @(Get-ScheduledTask -TaskPath $TaskPath -ErrorAction SilentlyContinue)
    if ($tasks.Count -eq 0) {
        Write-Warning "No scheduled tasks under $TaskPath. Apply the seawall.pgbackup.schedule role (playbooks/backup.yml) to create them."
        exit 1
    }
    $columns = @('TaskName', 'LastRunTime', 'LastTaskResult', 'NextRunTime')
    $tasks | Get-ScheduledTaskInfo | Select-Object -Property $columns | Format-Table -AutoSize
    exit 0
}

if (-not (Test-Path -LiteralPath $Engine)) {
    Write-Error "seawall-pgbackup is not installed at $Engine (pip install the collection's engine, or pass -Engine)."
    exit 1
}

$arguments = @('--config', $Config) + $ActionArguments[$Action]
if ($Action -eq 'restore' -and $TargetUrl -ne '') {
    $arguments += @('--target-url', $TargetUrl)
}
if (Test-Path -LiteralPath $PassFile) {
    $env:PGPASSFILE = $PassFile
}

& $Engine @arguments
exit $LASTEXITCODE
