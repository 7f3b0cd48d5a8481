; LoRA Studio setup for Windows (Inno Setup 6). A small setup.exe: it carries the app wheel and
; bootstrap.ps1, which fetches uv from PyPI, a Python, and the torch build for the GPU it finds
; (decided by lora_studio/install_plan.py) with triton-windows matched to it (triton_windows.py), then adds
; the Start-menu shortcut and the lora-studio command.
; Freezing torch into the installer would make it 3-5 GB; this stays well under 10 MB.
;
; Build: python -m pip wheel . --no-deps -w dist   then   iscc packaging\windows\lora-studio.iss
; (run from the repository root; the setup lands in dist\LoRA-Studio-Setup.exe)

#define AppVersion "0.1.0"

[Setup]
AppId={{6C3F2A4E-2B7D-4C1E-9F3A-10A0B5D1E7C2}
AppName=LoRA Studio
AppVersion={#AppVersion}
AppPublisher=LoRA Studio
DefaultDirName={localappdata}\LoRA Studio
DisableProgramGroupPage=yes
DisableDirPage=auto
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=LoRA-Studio-Setup
UninstallDisplayIcon={app}\lora-studio.ico
UninstallDisplayName=LoRA Studio
Compression=lzma2
SolidCompression=yes
WizardStyle=modern

[Files]
Source: "bootstrap.ps1"; DestDir: "{app}\setup"; Flags: ignoreversion
Source: "triton_windows.py"; DestDir: "{app}\setup"; Flags: ignoreversion
Source: "..\..\dist\lora_studio-{#AppVersion}-py3-none-any.whl"; DestDir: "{app}\setup"; Flags: ignoreversion

[UninstallRun]
Filename: "powershell.exe"; \
  Parameters: "-NoProfile -ExecutionPolicy Bypass -File ""{app}\setup\bootstrap.ps1"" -Prefix ""{app}"" -Uninstall -KeepSetup"; \
  Flags: runhidden waituntilterminated; RunOnceId: "LoRAStudioBootstrapUninstall"

[UninstallDelete]
Type: filesandordirs; Name: "{app}"

[Code]
// The bootstrap downloads torch (up to ~3 GB for CUDA builds); its console window shows progress.
// A failure is reported here and the setup can simply be run again: the bootstrap repairs.
procedure CurStepChanged(CurStep: TSetupStep);
var
  ResultCode: Integer;
  Params: String;
begin
  if CurStep = ssPostInstall then
  begin
    Params := '-NoProfile -ExecutionPolicy Bypass -File "' + ExpandConstant('{app}\setup\bootstrap.ps1') +
              '" -Prefix "' + ExpandConstant('{app}') + '"';
    WizardForm.StatusLabel.Caption := 'Downloading PyTorch for your GPU and setting up LoRA Studio...';
    if not Exec('powershell.exe', Params, '', SW_SHOW, ewWaitUntilTerminated, ResultCode) or (ResultCode <> 0) then
      MsgBox('LoRA Studio could not finish setting up (code ' + IntToStr(ResultCode) + ').' + #13#10 +
             'Check the internet connection and run this setup again: it picks up where it stopped.',
             mbError, MB_OK);
  end;
end;
