"""Words of the recipient pages, in French and English, and the choice of language.

Stage: pure helper of the web pages (no I/O).
Input: a ``?lang=`` parameter and an ``Accept-Language`` header. Output: "fr" or "en" and
the texts of that language.

Rule 1: ``?lang=`` wins (the switch link on every page), then the email's language (carried
        in the link's token), then the best-weighted supported language of
        ``Accept-Language``, then French.
Rule 2: purposes are shown with the CNIL's short titles and descriptions (recommendation,
        section 4.1); ``{who}`` is filled with the controller's name and its third parties
        (``relay.web.notice``). The other words of the pages are in ``relay.web.wording``.
"""

from __future__ import annotations

from relay.model import Purpose

LANGUAGES = ("fr", "en")
DEFAULT = "fr"

# Purposes a recipient can choose: the exempt authentication_security is not a choice.
CHOICE_PURPOSES: tuple[Purpose, ...] = (
    Purpose.DELIVERABILITY,
    Purpose.CAMPAIGN_PERFORMANCE,
    Purpose.CROSS_CONTEXT_PROFILING,
    Purpose.FRAUD_DETECTION,
)

PURPOSES: dict[str, dict[Purpose, tuple[str, str]]] = {
    "fr": {
        Purpose.DELIVERABILITY: (
            "Analyse du taux d'ouverture des e-mails à des fins de délivrabilité",
            "Des traceurs (pixels de suivi) sont utilisés par {who} pour savoir si et quand "
            "vous ouvrez les e-mails, afin d'établir des statistiques de diffusion et de prendre "
            "les mesures nécessaires (adaptation de la fréquence ou arrêt des envois) à la "
            "gestion des listes de diffusion.",
        ),
        Purpose.CAMPAIGN_PERFORMANCE: (
            "Analyse du taux d'ouverture des e-mails pour mesurer et optimiser la performance "
            "des campagnes",
            "Des traceurs (pixels de suivi) sont utilisés par {who} pour savoir si vous ouvrez "
            "les e-mails, à quel moment, et obtenir des informations sur l'appareil que vous "
            "utilisez, afin de personnaliser le contenu des messages, d'adapter la fréquence "
            "d'envoi ou le canal de communication.",
        ),
        Purpose.CROSS_CONTEXT_PROFILING: (
            "Création de profils à partir de vos préférences et centres d'intérêt observés, "
            "pour vous cibler ailleurs que dans les e-mails",
            "Vos préférences (par exemple les e-mails que vous avez ouverts ou les sujets qui "
            "vous intéressent) sont utilisées par {who} pour vous proposer des contenus ou des "
            "publicités adaptés sur d'autres sites, applications ou canaux de communication. "
            "Ces traceurs permettent de savoir si vous ouvrez les e-mails, à quel moment, et "
            "d'obtenir des informations sur votre appareil.",
        ),
        Purpose.FRAUD_DETECTION: (
            "Détection et analyse des soupçons de fraude",
            "Des traceurs (pixels de suivi) sont utilisés par {who} pour détecter et analyser "
            "des soupçons de fraude. Ces traceurs permettent de savoir si vous ouvrez les "
            "e-mails, à quel moment, et d'obtenir des informations sur votre appareil.",
        ),
    },
    "en": {
        Purpose.DELIVERABILITY: (
            "Analysis of the email opening rate for deliverability purposes",
            "Trackers (tracking pixels) are used by {who} to find out if and when you open the "
            "emails in order to compile diffusion statistics and take the necessary actions "
            "(adapting the frequency or stopping mailings) to manage the mailing lists.",
        ),
        Purpose.CAMPAIGN_PERFORMANCE: (
            "Analysis of the email opening rate to measure and optimise campaign performance",
            "Trackers (tracking pixels) are used by {who} to find out whether you open the "
            "emails, the time at which you do so, and information about the device you use, to "
            "personalise the content of the messages, adjust the sending frequency or the "
            "communication channel used.",
        ),
        Purpose.CROSS_CONTEXT_PROFILING: (
            "Creation of recipient profiles based on observed preferences and interests in "
            "order to target you in contexts other than emails",
            "Your preferences (e.g. emails you have opened or topics you are interested in) are "
            "used by {who} to provide you with tailored content or advertisements on other "
            "sites, applications or communication channels. These trackers let them know if "
            "you open the emails, the time at which you do so and information about the device "
            "you are using.",
        ),
        Purpose.FRAUD_DETECTION: (
            "Detection and analysis of suspected fraud",
            "Trackers (tracking pixels) are used by {who} to detect and analyse suspected "
            "fraud. These trackers let them know if you open the emails, the time at which you "
            "do so and information about the device you are using.",
        ),
    },
}


def _accept_language(header: str) -> list[tuple[float, int, str]]:
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower()[:2]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return sorted(ranked)


def choose(
    query_lang: str | None, accept_language: str | None, email_lang: str | None = None
) -> str:
    """The page's language (Rule 1): the visitor's switch, the email's, the browser's, French."""
    for explicit in (query_lang, email_lang):
        if explicit in LANGUAGES:
            return str(explicit)
    ranked = _accept_language(accept_language or "")
    return ranked[0][2] if ranked else DEFAULT


def other(lang: str) -> str:
    return "en" if lang == "fr" else "fr"
