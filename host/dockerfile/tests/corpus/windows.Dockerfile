# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command"]
COPY app c:\app\
RUN New-Item -ItemType Directory c:\data ; `
    Write-Host done
WORKDIR c:\app
