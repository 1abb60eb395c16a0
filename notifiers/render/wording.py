"""The words of a message: template families and languages, severity labels, the rules'
Chinese names and descriptions, and the fixed phrases.
"""

# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation on purpose.

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from config.models import Severity
from notifiers.base import (
    BodyFormat,
    Family,
)

Language = Literal["en", "zh"]


BUILTIN_DIR = Path(__file__).parent.parent / "templates"
FAMILIES: tuple[Family, ...] = ("plain", "markdown", "dingtalk", "html", "json")
LANGUAGES: tuple[Language, ...] = ("en", "zh")
TEMPLATE_NAMES = frozenset(
    f"{family}.{language}.{part}.j2"
    for family in FAMILIES
    for language in LANGUAGES
    for part in ("title", "body")
)
"""Every file name a templates_dir may override (files starting with `_` are partials)."""

BODY_FORMATS: Mapping[Family, BodyFormat] = {
    "plain": "text",
    "markdown": "markdown",
    "dingtalk": "markdown",
    "html": "html",
    "json": "text",
}

SEVERITY_LABELS: Mapping[Language, Mapping[Severity, str]] = {
    "en": {
        "critical": "CRITICAL",
        "high": "HIGH",
        "medium": "MEDIUM",
        "low": "LOW",
        "info": "INFO",
    },
    "zh": {"critical": "严重", "high": "高", "medium": "中", "low": "低", "info": "信息"},
}

RULE_TEXT_ZH: Mapping[str, tuple[str, str]] = {
    "privileged-container": ("特权容器", "容器以特权模式（--privileged）运行。"),
    "docker-socket-mount": (
        "挂载 Docker 套接字",
        "容器挂载了 Docker 或 containerd 套接字，可借此控制整台主机。",
    ),
    "sensitive-mount": ("挂载主机敏感目录", "主机的敏感目录（如 /、/etc、/proc）被挂载到容器中。"),
    "dangerous-capability": (
        "添加高危 Linux 能力",
        "容器通过 --cap-add 添加了高危的 Linux 能力（capability），如 SYS_ADMIN。",
    ),
    "host-namespace": ("共享主机命名空间", "容器与主机共享网络、进程等命名空间。"),
    "security-profile-disabled": (
        "安全配置被禁用",
        "容器禁用了 seccomp、AppArmor 或 SELinux 安全配置。",
    ),
    "untrusted-image": (
        "不受信任的镜像",
        "拉取、导入、加载、打标签或运行了可信镜像仓库之外的镜像。",
    ),
    "exec-in-container": (
        "在容器内执行命令",
        "通过 docker exec 在运行中的容器内执行了命令（以 root 身份、在特权容器内或打开 shell 时"
        "级别更高）。",
    ),
    "container-churn": ("容器频繁创建与销毁", "单位时间内容器的创建和销毁次数明显高于平时。"),
    "container-sprawl": (
        "已停止容器堆积",
        "已停止的容器比运行中的容器多出的数量超过了设定的阈值。",
    ),
    "daemon-config-change": (
        "Docker 守护进程文件被修改",
        "Docker 守护进程的文件（配置文件、systemd unit、可执行程序）被修改。",
    ),
    "no-resource-limits": ("未设置资源限制", "容器未设置内存或进程数（pids）限制。"),
    "writable-rootfs": ("根文件系统可写", "根文件系统不是只读的。"),
    "runs-as-root": ("以 root 运行", "容器进程以 root 身份运行。"),
    "unattributed-change": ("无法归属的变更", "无法追溯到任何登录用户的容器变更。"),
    "attribution-mismatch": (
        "归属声明不符",
        "audit.who 标签声称的人与 auditd 记录的登录用户不符。",
    ),
    "host-chain-broken": ("主机审计链断裂", "主机发布的审计链出现缺口、分叉、回退或签名无效。"),
    "proxy-refusal": (
        "代理拒绝了 API 调用",
        "套接字代理按策略（或因审计记录无法写入）拒绝了一次 API 调用。",
    ),
    "daemon-posture": (
        "守护进程安全配置变差",
        "Docker 守护进程的安全设置变差（icc、userns、live-restore 等）。",
    ),
    "container-drift": (
        "容器文件漂移",
        "运行中容器的程序、库或配置目录（bin、sbin、lib、etc）被改动。",
    ),
    "host-posture": ("运维安全状况变差", "镜像或容器堆积、卷无备份、无限制容器占用过多主机资源。"),
    "audit-rule-posture": ("审计规则缺失", "docktrail 需要的 Docker 文件审计监视未加载。"),
    "fleet-churn": ("集群容器频繁创建销毁", "多台主机上容器创建/销毁总数超出阈值。"),
    "fleet-untrusted-image": ("多台主机使用不受信任的镜像", "同一不受信任的镜像出现在多台主机上。"),
    "intent-mismatch": ("部署人与声明不符", "与已声明部署意图匹配的容器由另一登录用户创建。"),
    "expired-deployment": ("部署已过期", "容器在声明的到期时间之后仍在运行。"),
    "undeclared-deployment": ("未声明的部署", "创建的容器没有匹配的部署意图，也没有 why 标签。"),
    "exec-code-fetch": (
        "exec 会话下载并执行代码",
        "exec 会话中的命令下载代码并执行（如 curl | sh）。",
    ),
    "exec-package-manager": (
        "运行中容器里使用包管理器",
        "exec 会话中用 apt、apk、yum、pip 等安装或删除软件。",
    ),
    "exec-credential-read": (
        "exec 会话读取凭据文件",
        "exec 会话中的命令访问了 /etc/shadow、SSH 密钥、云或镜像仓库凭据等。",
    ),
    "exec-binary-edit": (
        "手工改动容器内程序",
        "exec 会话中的命令写入、替换或删除了程序或库目录中的文件。",
    ),
    "exec-root-shell": (
        "容器内交互式 root shell",
        "在终端中以 root 身份打开了容器内的交互式 shell。",
    ),
}
"""Chinese name and description of every rule id (the summary itself stays as stored)."""

WORDS: Mapping[Language, Mapping[str, str]] = {
    "en": {"unknown": "unknown", "as": "{login} (as {user})", "s": "s", "min": "min", "h": "h"},
    "zh": {
        "unknown": "未知",
        "as": "{login}（以 {user} 身份）",
        "s": "秒",
        "min": "分钟",
        "h": "小时",
    },
}

MAX_TEMPLATE_BYTES = 256 * 1024
MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")
NS = 1_000_000_000
HTML_SHELL = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body><p>{}</p></body></html>\n'
)
