"""Pure triage rules: category and urgency from a report's text. No I/O, no framework.

The worst error this service can make is calling an emergency "general" (a 2-hour clock on a
15-minute matter), so urgency errs towards urgent: any danger marker that is not negated makes
the incident urgent, and so does an empty or unreadable report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from contracts.vocabulary import Category, Urgency

RULES_VERSION = "rules-2026.11.1"

# Keywords per category, Chinese and English. Chinese has no word spaces, so matching is by
# substring; English by word prefix.
CATEGORY_KEYWORDS: dict[Category, tuple[str, ...]] = {
    Category.FIRE: ("🔥", "着火", "起火", "火灾", "冒烟", "烟雾", "火苗", "烧起来", "fire", "smoke", "burning", "flames"),
    Category.MEDICAL_EMERGENCY: (
        "晕倒", "昏迷", "心脏病", "呼吸困难", "抽搐", "急救", "120", "倒地", "不省人事", "中风",
        "unconscious", "collapsed", "heart attack", "not breathing", "ambulance", "seizure", "stroke",
    ),
    Category.VIOLENCE: (
        "打架", "斗殴", "殴打", "打人", "持刀", "砍人", "动手", "家暴", "行凶", "群殴",
        "fight", "fighting", "assault", "knife", "stabbing", "beating", "attacked", "domestic violence",
    ),
    Category.TRAFFIC_ACCIDENT: (
        "车祸", "撞车", "追尾", "交通事故", "撞人", "翻车", "被车撞",
        "car crash", "collision", "traffic accident", "hit by a car", "crash",
    ),
    Category.MISSING_PERSON: (
        "走失", "失踪", "找不到人", "不见了", "没回家", "missing", "lost child", "wandered off",
    ),
    Category.TELECOM_FRAUD: (
        "诈骗", "骗子", "转账", "冒充", "刷单", "验证码", "安全账户", "中奖", "杀猪盘",
        "fraud", "scam", "scammer", "transfer money", "impersonat",
    ),
    Category.THEFT: (
        "偷", "盗", "被窃", "小偷", "扒窃", "失窃", "电动车被", "撬锁",
        "theft", "stolen", "steal", "burglary", "thief", "pickpocket",
    ),
    Category.NEIGHBOUR_DISPUTE: (
        "邻居", "邻里", "楼上", "楼下", "吵架", "争吵", "纠纷", "漏水", "占用楼道",
        "neighbour", "neighbor", "quarrel", "argument", "dispute",
    ),
    Category.MEDIATION_REQUEST: (
        "调解", "协调", "欠薪", "工资", "房东", "租客", "合同", "mediation", "mediate", "unpaid wages", "landlord",
    ),
    Category.SAFETY_HAZARD: (
        "隐患", "燃气泄漏", "煤气泄漏", "漏气", "电线", "私拉", "飞线充电", "危房", "井盖", "消防通道", "坍塌", "裂缝",
        "hazard", "gas leak", "exposed wire", "manhole", "collapse", "fire exit blocked",
    ),
    Category.CONSULTATION: (
        "咨询", "办证", "身份证", "户口", "居住证", "证明", "怎么办理", "请问",
        "consultation", "how do i", "id card", "residence permit", "certificate", "hukou",
    ),
    Category.ENVIRONMENT: (
        "垃圾", "污水", "臭", "环境卫生", "乱扔", "堆放", "下水道", "堵塞", "油烟",
        "garbage", "trash", "sewage", "smell", "litter", "rubbish", "sanitation",
    ),
    Category.CIVIL_AFFAIRS: (
        "低保", "独居老人", "困难家庭", "救助", "残疾", "孤寡", "流浪", "养老",
        "subsidy", "elderly living alone", "homeless", "welfare", "disabled",
    ),
    Category.MARKET_SAFETY: (
        "食品", "过期", "变质", "无证经营", "假货", "食物中毒", "餐馆", "价格欺诈",
        "food", "expired", "counterfeit", "unlicensed", "food poisoning",
    ),
    Category.NOISE: ("噪音", "太吵", "施工", "吵闹", "扰民", "广场舞", "装修声", "施工噪声", "noise", "noisy", "loud music"),
}

# Categories that are urgent by nature, whatever the wording.
URGENT_BY_DEFAULT = frozenset(
    {
        Category.FIRE,
        Category.MEDICAL_EMERGENCY,
        Category.VIOLENCE,
        Category.TRAFFIC_ACCIDENT,
        Category.MISSING_PERSON,
        Category.TELECOM_FRAUD,
    }
)

# Danger to life, violence, fire, injury, vulnerable people, ongoing crime.
URGENCY_MARKERS: dict[str, tuple[str, ...]] = {
    "danger_to_life": ("救命", "自杀", "跳楼", "轻生", "生命危险", "溺水", "help!", "suicide", "drowning", "life-threatening"),
    "injury": ("受伤", "流血", "出血", "骨折", "昏迷", "伤者", "injur", "bleeding", "blood", "wounded", "hurt"),
    "violence": ("🔪", "打架", "持刀", "砍", "殴打", "斗殴", "刀", "枪", "knife", "gun", "weapon", "fighting", "attack"),
    "fire": ("🔥", "着火", "起火", "火灾", "冒烟", "燃气泄漏", "煤气泄漏", "爆炸", "fire", "smoke", "gas leak", "explosion"),
    "vulnerable": ("老人", "小孩", "儿童", "孩子", "孕妇", "残疾人", "elderly", "child", "kid", "pregnant", "toddler"),
    "ongoing": ("正在", "马上", "紧急", "快来", "现在", "right now", "in progress", "urgent", "hurry", "emergency"),
}
# A vulnerable person alone is not an emergency (a consultation about an elderly parent's
# subsidy is not); it raises urgency only together with another danger or an ongoing event.
WEAK_MARKERS = frozenset({"vulnerable", "ongoing"})

_NEGATIONS_ZH = ("没有", "没", "无", "未", "不是", "并未", "并没有")
_NEGATIONS_EN = ("no ", "not ", "nobody ", "no one ", "without ", "never ")
_NEGATION_WINDOW = 6


@dataclass(frozen=True)
class Decision:
    """The outcome of triage for one report."""

    category: Category
    urgency: Urgency
    priority: int
    confidence: float
    rules_fired: tuple[str, ...] = field(default_factory=tuple)
    needs_review: bool = False
    version: str = RULES_VERSION


def normalise(text: str) -> str:
    """Lower-case, collapse whitespace, unify full-width punctuation."""
    text = text.lower().replace("！", "!").replace("，", ",").replace("。", ".")
    return re.sub(r"\s+", " ", text).strip()


def _negated(text: str, start: int) -> bool:
    before = text[max(0, start - _NEGATION_WINDOW) : start]
    return any(n in before for n in _NEGATIONS_ZH) or any(before.endswith(n) or n in before for n in _NEGATIONS_EN)


def _hits(text: str, keywords: tuple[str, ...]) -> list[str]:
    found = []
    for word in keywords:
        for match in re.finditer(re.escape(word), text):
            if not _negated(text, match.start()):
                found.append(word)
                break
    return found


def classify(description: str, category_hint: Category | None = None, review_threshold: float = 0.6) -> Decision:
    """Decide category and urgency; when in doubt, urgent."""
    text = normalise(description)
    fired: list[str] = []
    scores: dict[Category, float] = {}
    for category, keywords in CATEGORY_KEYWORDS.items():
        hits = _hits(text, keywords)
        if hits:
            # Longer phrases are more specific than single words ("fire exit blocked" vs "fire").
            scores[category] = sum(1 + min(len(h), 12) / 12 for h in hits)
            fired.extend(f"category:{category.value}:{h}" for h in hits)
    if category_hint is not None:
        scores[category_hint] = scores.get(category_hint, 0.0) + 1.5
        fired.append(f"hint:{category_hint.value}")

    if scores:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _urgent_first(kv[0])))
        category, best = ranked[0]
        total = sum(scores.values())
        confidence = round(min(0.99, 0.5 + 0.5 * best / total) if total else 0.5, 3)
    else:
        category, confidence = Category.OTHER, 0.3

    markers = {kind for kind, words in URGENCY_MARKERS.items() if _hits(text, words)}
    fired.extend(f"urgency:{m}" for m in sorted(markers))
    strong = markers - WEAK_MARKERS
    if category in URGENT_BY_DEFAULT:
        urgency, reason = Urgency.URGENT, "urgent-category"
    elif strong or markers >= WEAK_MARKERS:
        urgency, reason = Urgency.URGENT, "danger-marker"
    elif not text and category_hint is None:
        urgency, reason = Urgency.URGENT, "unreadable-report"
    else:
        urgency, reason = Urgency.GENERAL, "no-danger"
    fired.append(f"urgency-decision:{reason}")

    priority = _priority(urgency, strong, markers)
    return Decision(
        category=category,
        urgency=urgency,
        priority=priority,
        confidence=confidence,
        rules_fired=tuple(fired),
        needs_review=confidence < review_threshold,
    )


def _urgent_first(category: Category) -> int:
    return 0 if category in URGENT_BY_DEFAULT else 1


def _priority(urgency: Urgency, strong: set[str], markers: set[str]) -> int:
    if urgency is Urgency.URGENT:
        return 1 if {"danger_to_life", "injury", "fire"} & strong else 2
    return 3 if markers else 4
