<#
LoRA Studio bootstrap for Windows: the steps of packaging/linux/install.sh, run by the Inno Setup
installer (lora-studio.iss) after it copied this script and the app wheel to {app}\setup.

  powershell -ExecutionPolicy Bypass -File bootstrap.ps1 [-Prefix DIR] [-Wheel FILE] [-TorchBuild TAG]
  powershell -ExecutionPolicy Bypass -File bootstrap.ps1 -DryRun      # print the plan, change nothing
  powershell -ExecutionPolicy Bypass -File bootstrap.ps1 -Uninstall   # remove what it made

uv comes from PyPI (the uv wheel is a zip holding uv.exe); uv fetches a Python for the app environment,
so no system Python is needed. Which torch build suits the GPU is decided by lora_studio/install_plan.py
(the tests run it), read from the wheel itself; which triton-windows suits that torch by triton_windows.py
next to this script. Rerunning repairs an interrupted install.
#>
param(
    [string]$Prefix = (Join-Path $env:LOCALAPPDATA "LoRA Studio"),
    [string]$Wheel = "",
    [string]$TorchBuild = "",
    [switch]$DryRun,
    [switch]$Uninstall,
    [switch]$KeepSetup   # the Inno Setup uninstaller deletes {app}\setup itself
)
$ErrorActionPreference = "Stop"
$ProgressPreference = "SilentlyContinue"   # Invoke-WebRequest is very slow with the progress bar on
# Windows PowerShell 5.1 may still default to TLS 1.0, which PyPI refuses
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12

function Step($msg) { Write-Host "==> $msg" }
function Fail($msg, $advice) {
    Write-Host "error: $msg" -ForegroundColor Red
    if ($advice) { Write-Host "what to do: $advice" }
    exit 1
}
function Invoke-Checked([string]$what, [scriptblock]$block) {
    & $block
    if ($LASTEXITCODE -ne 0) { Fail "$what failed (exit $LASTEXITCODE)." "check the internet connection and run the installer again; it resumes." }
}

$EnvDir = Join-Path $Prefix "env"
$Record = Join-Path $Prefix "install.json"
$Marker = Join-Path $Prefix ".install-incomplete"
$BinDir = Join-Path $Prefix "bin"
$Shortcut = Join-Path ([Environment]::GetFolderPath("Programs")) "LoRA Studio.lnk"
$Icon = Join-Path $Prefix "lora-studio.ico"
if ($TorchBuild) { $env:LORA_STUDIO_TORCH_BUILD = $TorchBuild }

function Set-UserPath([bool]$add) {
    $path = [Environment]::GetEnvironmentVariable("Path", "User")
    $parts = @($path -split ";" | Where-Object { $_ -and ($_ -ne $BinDir) })
    if ($add) { $parts += $BinDir }
    $new = $parts -join ";"
    if ($new -ne $path) { [Environment]::SetEnvironmentVariable("Path", $new, "User") }
}

if ($Uninstall) {
    if ((Test-Path $Prefix) -and -not (Test-Path $Record) -and -not (Test-Path $Marker)) {
        Fail "$Prefix does not look like a LoRA Studio install (no install.json)." "pass the -Prefix you installed to."
    }
    if (Test-Path $Shortcut) { Remove-Item $Shortcut -Force; Write-Host "removed $Shortcut" }
    Set-UserPath $false
    foreach ($item in @($EnvDir, $BinDir, (Join-Path $Prefix "tools"), (Join-Path $Prefix "python"),
                        (Join-Path $Prefix "cache"), $Record, $Icon, $Marker, (Join-Path $Prefix "constraints.txt"))) {
        if (Test-Path $item) { Remove-Item $item -Recurse -Force }
    }
    if (-not $KeepSetup -and (Test-Path $Prefix)) { Remove-Item $Prefix -Recurse -Force }
    Write-Host "LoRA Studio is uninstalled. Your datasets, models and trained LoRAs are kept."
    exit 0
}

# --- the app wheel: -Wheel, next to this script (Inno Setup), or built from the source tree ---------------
$Src = ""
if (-not $Wheel) {
    $Root = Resolve-Path (Join-Path $PSScriptRoot "..\..") -ErrorAction SilentlyContinue
    $near = Get-ChildItem -Path $PSScriptRoot -Filter "lora_studio-*.whl" -ErrorAction SilentlyContinue |
        Sort-Object LastWriteTime -Descending | Select-Object -First 1
    if ($near) { $Wheel = $near.FullName }
    elseif ($Root -and (Test-Path (Join-Path $Root "pyproject.toml"))) { $Src = "$Root" }
    else { Fail "found neither a lora_studio-*.whl next to this script nor the source tree." "pass -Wheel FILE." }
}

# --- uv: on PATH, already fetched, or its wheel from PyPI (a zip; uv.exe sits in its scripts folder) ------
$env:UV_CACHE_DIR = if ($env:UV_CACHE_DIR) { $env:UV_CACHE_DIR } else { Join-Path $Prefix "cache\uv" }
$env:UV_PYTHON_INSTALL_DIR = if ($env:UV_PYTHON_INSTALL_DIR) { $env:UV_PYTHON_INSTALL_DIR } else { Join-Path $Prefix "python" }
$Uv = (Get-Command uv -ErrorAction SilentlyContinue).Source
$ToolUv = Join-Path $Prefix "tools\uv.exe"
if (-not $Uv -and (Test-Path $ToolUv)) { $Uv = $ToolUv }
if (-not $Uv -and -not $DryRun) {
    Step "Getting uv (the package installer) from PyPI"
    $meta = Invoke-RestMethod "https://pypi.org/pypi/uv/json"
    $file = $meta.urls | Where-Object { $_.filename -like "*-py3-none-win_amd64.whl" } | Select-Object -First 1
    if (-not $file) { Fail "PyPI has no Windows uv wheel for this version." "run the installer again later." }
    $tmp = Join-Path ([IO.Path]::GetTempPath()) ("uv-" + [Guid]::NewGuid())
    New-Item -ItemType Directory $tmp | Out-Null
    Invoke-WebRequest $file.url -OutFile "$tmp\uv.zip"
    $hash = (Get-FileHash "$tmp\uv.zip" -Algorithm SHA256).Hash.ToLower()
    if ($hash -ne $file.digests.sha256) { Fail "the uv download is corrupt (sha256 mismatch)." "run the installer again." }
    Expand-Archive "$tmp\uv.zip" -DestinationPath "$tmp\x"
    New-Item -ItemType Directory (Split-Path $ToolUv) -Force | Out-Null
    Copy-Item (Get-ChildItem "$tmp\x" -Recurse -Filter uv.exe | Select-Object -First 1).FullName $ToolUv
    Remove-Item $tmp -Recurse -Force
    $Uv = $ToolUv
}

# --- the plan, decided by install_plan.py with a uv-managed Python ----------------------------------------
if (-not $Uv) { Fail "uv is needed to plan the install." "run without -DryRun once, or install uv." }
Invoke-Checked "fetching Python" { & $Uv python install -q 3.12 }
$Py = (& $Uv python find 3.12).Trim()
if ($Src) { $planJson = & $Py (Join-Path $Src "lora_studio\install_plan.py") plan --json }
else { $env:PYTHONPATH = $Wheel; $planJson = & $Py -m lora_studio.install_plan plan --json; Remove-Item Env:PYTHONPATH }
if ($LASTEXITCODE -ne 0) { Fail "could not decide which torch build to install." "pass -TorchBuild cpu (or cu126, cu130)." }
$Plan = ($planJson -join "`n") | ConvertFrom-Json

if ($DryRun) {
    Write-Host "LoRA Studio install plan (dry run: nothing is changed)"
    Write-Host "torch build : $($Plan.build) ($($Plan.reason))"
    Write-Host "torch       : $($Plan.torch_requirement) from $($Plan.index_url)"
    Write-Host "triton      : triton-windows matched to the torch installed (CUDA builds only; triton_windows.py)"
    foreach ($g in $Plan.gpus) { Write-Host "GPU         : $($g.name), driver $($g.driver)" }
    foreach ($w in $Plan.warnings) { Write-Host "warning     : $w" }
    Write-Host "prefix      : $Prefix"
    Write-Host "shortcut    : $Shortcut"
    exit 0
}

# --- install ---------------------------------------------------------------------------------------------
New-Item -ItemType Directory $Prefix -Force | Out-Null
if (Test-Path $Marker) {
    Step "An earlier install was interrupted: rebuilding the environment"
    foreach ($item in @($EnvDir, $Record)) { if (Test-Path $item) { Remove-Item $item -Recurse -Force } }
}
Set-Content $Marker ""
$EnvPy = Join-Path $EnvDir "Scripts\python.exe"
$Old = if (Test-Path $Record) { Get-Content $Record -Raw | ConvertFrom-Json } else { $null }

if (-not (Test-Path $EnvPy)) {
    Step "Creating the app environment in $EnvDir"
    Invoke-Checked "creating the environment" { & $Uv venv -q --python $Plan.python $EnvDir }
}
$torchVersion = & $EnvPy -I -c "from importlib.metadata import version; print(version('torch'))" 2>$null
if (-not $torchVersion -or -not $Old -or $Old.build -ne $Plan.build) {
    Step "Installing torch ($($Plan.build)) - the largest download, it can take a while"
    $uvArgs = @("pip", "install", "-q", "--python", $EnvPy)
    if ($torchVersion) { $uvArgs += @("--reinstall-package", "torch") }
    if ($Plan.torch_wheel) { $uvArgs += $Plan.torch_wheel }
    elseif ($Plan.index_url) { $uvArgs += @("--index-url", $Plan.index_url, $Plan.torch_requirement) }
    else { $uvArgs += $Plan.torch_requirement }
    Invoke-Checked "installing torch" { & $Uv @args }
    $torchVersion = & $EnvPy -I -c "from importlib.metadata import version; print(version('torch'))"
}
$Constraints = Join-Path $Prefix "constraints.txt"
Set-Content $Constraints "torch==$torchVersion"

if ($Src) {
    Step "Building the LoRA Studio wheel from $Src"
    $dist = Join-Path $Prefix "build"
    Invoke-Checked "building the wheel" { & $Uv build -q --wheel --out-dir $dist $Src }
    $Wheel = (Get-ChildItem $dist -Filter "lora_studio-*.whl" | Select-Object -First 1).FullName
}
$env:PYTHONPATH = $Wheel
$appHash = (& $Py -m lora_studio.install_plan wheel-hash $Wheel).Trim()
Remove-Item Env:PYTHONPATH
if (-not $Old -or $Old.app_hash -ne $appHash) {
    Step "Installing LoRA Studio and its libraries"
    $uvArgs = @("pip", "install", "-q", "--python", $EnvPy, "--constraint", $Constraints)
    if ($Old) { $uvArgs += @("--reinstall-package", "lora-studio") }
    Invoke-Checked "installing LoRA Studio" { & $Uv @args $Wheel }
}
if ($Src) { Remove-Item (Join-Path $Prefix "build") -Recurse -Force }

# --- Triton for the fast training kernels: torch's Windows wheels carry none. triton_windows.py (next to this
# script) picks the triton-windows matched to the torch just installed. Optional: without it the app trains on
# its eager kernels, so a failure here is reported, never fatal.
$tw = $null
try { $tw = ((& $Py (Join-Path $PSScriptRoot "triton_windows.py") $torchVersion $Plan.build) -join "`n") | ConvertFrom-Json }
catch { $tw = $null }
if (-not $tw) {
    Write-Host "note: could not decide which triton-windows fits torch $torchVersion; LoRA Studio runs without its Triton kernels."
} elseif (-not $tw.requirement) {
    Write-Host "Triton kernels: not installed ($($tw.reason)); LoRA Studio runs without them."
} else {
    Step "Installing $($tw.requirement) for the fast training kernels ($($tw.reason))"
    $twOk = $false
    try { & $Uv pip install -q --python $EnvPy $tw.requirement; $twOk = ($LASTEXITCODE -eq 0) } catch { $twOk = $false }
    if (-not $twOk) {
        Write-Host "note: $($tw.requirement) could not be installed. LoRA Studio works without it, with slower" `
            "training steps; run this setup again to retry."
    }
}

Step "Adding the Start-menu shortcut and the lora-studio command"
New-Item -ItemType Directory $BinDir -Force | Out-Null
Set-Content (Join-Path $BinDir "lora-studio.cmd") "@`"$EnvDir\Scripts\lora-studio.exe`" %*"
Set-UserPath $true
& $EnvPy -I -c "import sys; from PIL import Image; from lora_studio.paths import resource; Image.open(resource('icons', 'lora-studio.png')).save(sys.argv[1], sizes=[(256, 256), (48, 48), (32, 32), (16, 16)])" $Icon
$shell = New-Object -ComObject WScript.Shell
$lnk = $shell.CreateShortcut($Shortcut)
$lnk.TargetPath = Join-Path $EnvDir "Scripts\pythonw.exe"
$lnk.Arguments = "-m lora_studio gui"
$lnk.IconLocation = $Icon
$lnk.WorkingDirectory = [Environment]::GetFolderPath("MyDocuments")
$lnk.Save()

Step "Checking that torch sees the device chosen for it"
$planFile = Join-Path $Prefix "plan.json.tmp"
Set-Content $planFile ($planJson -join "`n")
$env:PYTHONPATH = $Wheel
$recordJson = & $Py -m lora_studio.install_plan record $planFile "prefix=$Prefix" "env=$EnvDir" `
    "launcher=$BinDir\lora-studio.cmd" "desktop=$Shortcut" "icon=$Icon" "torch_version=$torchVersion" "app_hash=$appHash"
Remove-Item Env:PYTHONPATH
Remove-Item $planFile
Set-Content $Record ($recordJson -join "`n")
& $EnvPy -I -c "from lora_studio.core.system import torch_check; print(torch_check().summary())"
# which kernel path training gets: "fast kernels (Triton)" or "without Triton kernels: <why>" (never fails)
try { & $EnvPy -I -m lora_studio.core.accel.triton_check } catch { Write-Host "training kernels: could not be checked ($_)" }
Remove-Item $Marker

Write-Host ""
Write-Host "LoRA Studio is installed (torch $torchVersion, $($Plan.build)). Start it from the Start menu, or run 'lora-studio' in a new terminal."
