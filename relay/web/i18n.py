"""Words of the recipient pages, in French and English, and the choice of language.

Stage: pure helper of the web pages (no I/O).
Input: a ``?lang=`` parameter and an ``Accept-Language`` header. Output: "fr" or "en" and
the texts of that language.

Rule 1: ``?lang=`` wins (the switch link on every page), then the best-weighted supported
        language of ``Accept-Language``, then French.
Rule 2: purposes are shown with the CNIL's short titles and descriptions (recommendation,
        section 4.1), with "the sender" standing for the sender's name.
Rule 3: the notice hash (part of every proof) is computed over exactly the purpose texts
        shown, so an auditor can tell which wording a recipient saw.
"""

from __future__ import annotations

import hashlib
import json

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
            "L'expéditeur de ces e-mails et ses prestataires utilisent des traceurs (pixels de "
            "suivi) pour savoir si et quand vous ouvrez les e-mails, afin d'établir des "
            "statistiques de diffusion et de prendre les mesures nécessaires (adaptation de la "
            "fréquence ou arrêt des envois) à la gestion des listes de diffusion.",
        ),
        Purpose.CAMPAIGN_PERFORMANCE: (
            "Analyse du taux d'ouverture des e-mails pour mesurer et optimiser la performance "
            "des campagnes",
            "L'expéditeur de ces e-mails et ses prestataires utilisent des traceurs (pixels de "
            "suivi) pour savoir si vous ouvrez les e-mails, à quel moment, et obtenir des "
            "informations sur l'appareil que vous utilisez, afin de personnaliser le contenu "
            "des messages, d'adapter la fréquence d'envoi ou le canal de communication.",
        ),
        Purpose.CROSS_CONTEXT_PROFILING: (
            "Création de profils à partir de vos préférences et centres d'intérêt observés, "
            "pour vous cibler ailleurs que dans les e-mails",
            "L'expéditeur de ces e-mails et ses prestataires utilisent vos préférences (par "
            "exemple les e-mails que vous avez ouverts ou les sujets qui vous intéressent) pour "
            "vous proposer des contenus ou des publicités adaptés sur d'autres sites, "
            "applications ou canaux de communication. Ces traceurs permettent de savoir si vous "
            "ouvrez les e-mails, à quel moment, et d'obtenir des informations sur votre "
            "appareil.",
        ),
        Purpose.FRAUD_DETECTION: (
            "Détection et analyse des soupçons de fraude",
            "L'expéditeur de ces e-mails et ses prestataires utilisent des traceurs (pixels de "
            "suivi) pour détecter et analyser des soupçons de fraude. Ces traceurs permettent "
            "de savoir si vous ouvrez les e-mails, à quel moment, et d'obtenir des informations "
            "sur votre appareil.",
        ),
    },
    "en": {
        Purpose.DELIVERABILITY: (
            "Analysis of the email opening rate for deliverability purposes",
            "The sender of these emails and its service providers use trackers (tracking "
            "pixels) to find out if and when you open the emails in order to compile diffusion "
            "statistics and take the necessary actions (adapting the frequency or stopping "
            "mailings) to manage the mailing lists.",
        ),
        Purpose.CAMPAIGN_PERFORMANCE: (
            "Analysis of the email opening rate to measure and optimise campaign performance",
            "The sender of these emails and its service providers use trackers (tracking "
            "pixels) to find out whether you open the emails, the time at which you do so, and "
            "information about the device you use, to personalise the content of the messages, "
            "adjust the sending frequency or the communication channel used.",
        ),
        Purpose.CROSS_CONTEXT_PROFILING: (
            "Creation of recipient profiles based on observed preferences and interests in "
            "order to target you in contexts other than emails",
            "The sender of these emails and its service providers use your preferences (e.g. "
            "emails you have opened or topics you are interested in) to provide you with "
            "tailored content or advertisements on other sites, applications or communication "
            "channels. These trackers let them know if you open the emails, the time at which "
            "you do so and information about the device you are using.",
        ),
        Purpose.FRAUD_DETECTION: (
            "Detection and analysis of suspected fraud",
            "The sender of these emails and its service providers use trackers (tracking "
            "pixels) to detect and analyse suspected fraud. These trackers let them know if "
            "you open the emails, the time at which you do so and information about the device "
            "you are using.",
        ),
    },
}

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "switch": "English",
        "withdraw_title": "Arrêter le suivi de vos e-mails",
        "withdraw_intro": "Les e-mails que vous recevez de cet expéditeur peuvent contenir des "
        "traceurs (pixels de suivi) soumis à votre consentement. Un clic sur le bouton retire "
        "votre consentement pour toutes les finalités ci-dessous, y compris lorsque vous "
        "rouvrez d'anciens e-mails. Vous continuerez à recevoir les e-mails : ce n'est pas "
        "un désabonnement.",
        "tracked_now": "Suivi actuellement autorisé",
        "tracked_none": "Aucun suivi soumis à consentement n'est actuellement autorisé.",
        "stop": "Arrêter le suivi",
        "more": "En savoir plus",
        "withdrawn_title": "Suivi arrêté",
        "withdrawn_body": "Votre consentement est retiré pour toutes les finalités. Les "
        "prochains e-mails ne contiendront plus ces traceurs, et les anciens e-mails ne "
        "pourront plus signaler leur ouverture.",
        "prefs_title": "Vos choix de suivi des e-mails",
        "prefs_intro": "Choisissez, finalité par finalité, si l'expéditeur peut utiliser des "
        "traceurs dans les e-mails qu'il vous envoie. Refuser est aussi simple qu'accepter ; "
        "vous pouvez changer d'avis à tout moment. Ne rien choisir vaut refus.",
        "consent_title": "L'expéditeur vous demande votre accord",
        "consent_intro": "L'expéditeur souhaite utiliser des traceurs dans les e-mails qu'il "
        "vous envoie à cette adresse, sur tous les appareils où vous les lisez. Choisissez "
        "finalité par finalité ; refuser est aussi simple qu'accepter. Ne rien faire vaut refus.",
        "accept": "Accepter",
        "refuse": "Refuser",
        "accept_all": "Tout accepter",
        "refuse_all": "Tout refuser",
        "save": "Enregistrer mes choix",
        "saved_title": "Vos choix sont enregistrés",
        "saved_body": "Ils s'appliquent dès le prochain e-mail, et aux anciens e-mails rouverts.",
        "granted": "accepté",
        "refused": "refusé",
        "withdrawn": "retiré",
        "expired": "expiré",
        "none": "pas de choix (vaut refus)",
        "current": "Choix actuel",
        "error_title": "Ce lien ne peut pas être utilisé",
        "error_malformed": "Ce lien est incomplet ou abîmé. Copiez le lien entier depuis l'e-mail.",
        "error_forged": "Ce lien n'a pas été émis par nous ou a été modifié.",
        "error_unknown key": "Ce lien a été signé avec une clé qui n'est plus en service.",
        "error_expired": "Ce lien a expiré. Utilisez le lien d'un e-mail plus récent.",
        "error_wrong kind": "Ce lien ne correspond pas à cette page.",
        "error_unknown": "Nous ne retrouvons pas le destinataire de ce lien. Utilisez le lien "
        "d'un e-mail plus récent.",
        "error_nonce": "Ce formulaire a expiré ou a déjà été utilisé depuis une autre page. "
        "Rechargez la page puis cliquez de nouveau.",
        "error_unavailable": "Le service est momentanément indisponible ; rien n'a été "
        "enregistré. Réessayez dans quelques minutes.",
        "error_notfound": "Cette page n'existe pas.",
        "error_method": "Cette action n'est pas permise ici.",
        "error_badrequest": "Cette demande n'a pas pu être comprise ; rien n'a été enregistré.",
        "error_internal": "Une erreur inattendue est survenue ; rien n'a été enregistré.",
        "reload": "Recharger la page",
    },
    "en": {
        "switch": "Français",
        "withdraw_title": "Stop tracking of your emails",
        "withdraw_intro": "Emails you receive from this sender may contain trackers (tracking "
        "pixels) that rely on your consent. One click on the button withdraws your consent "
        "for every purpose below, including when you re-open old emails. You will keep "
        "receiving the emails: this is not an unsubscription.",
        "tracked_now": "Tracking currently allowed",
        "tracked_none": "No consent-based tracking is currently allowed.",
        "stop": "Stop tracking",
        "more": "Learn more",
        "withdrawn_title": "Tracking stopped",
        "withdrawn_body": "Your consent is withdrawn for every purpose. Future emails will not "
        "carry these trackers, and old emails can no longer report that they were opened.",
        "prefs_title": "Your email tracking choices",
        "prefs_intro": "Choose, purpose by purpose, whether the sender may use trackers in the "
        "emails it sends you. Refusing is as easy as accepting; you can change your mind at "
        "any time. Making no choice means refusal.",
        "consent_title": "The sender asks for your agreement",
        "consent_intro": "The sender would like to use trackers in the emails it sends to this "
        "address, on every device where you read them. Choose purpose by purpose; refusing "
        "is as easy as accepting. Doing nothing means refusal.",
        "accept": "Accept",
        "refuse": "Refuse",
        "accept_all": "Accept all",
        "refuse_all": "Refuse all",
        "save": "Save my choices",
        "saved_title": "Your choices are saved",
        "saved_body": "They apply from the next email on, and to old emails when re-opened.",
        "granted": "accepted",
        "refused": "refused",
        "withdrawn": "withdrawn",
        "expired": "expired",
        "none": "no choice (means refusal)",
        "current": "Current choice",
        "error_title": "This link cannot be used",
        "error_malformed": "This link is incomplete or damaged. Copy the whole link from the "
        "email.",
        "error_forged": "This link was not issued by us or has been changed.",
        "error_unknown key": "This link was signed with a key that is no longer in service.",
        "error_expired": "This link has expired. Use the link in a more recent email.",
        "error_wrong kind": "This link does not belong to this page.",
        "error_unknown": "We cannot find the recipient of this link. Use the link in a more "
        "recent email.",
        "error_nonce": "This form has expired or was already used from another page. Reload "
        "the page and click again.",
        "error_unavailable": "The service is temporarily unavailable; nothing was recorded. "
        "Please try again in a few minutes.",
        "error_notfound": "This page does not exist.",
        "error_method": "This action is not allowed here.",
        "error_badrequest": "This request could not be understood; nothing was recorded.",
        "error_internal": "An unexpected error occurred; nothing was recorded.",
        "reload": "Reload the page",
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


def choose(query_lang: str | None, accept_language: str | None) -> str:
    if query_lang in LANGUAGES:
        return str(query_lang)
    ranked = _accept_language(accept_language or "")
    return ranked[0][2] if ranked else DEFAULT


def other(lang: str) -> str:
    return "en" if lang == "fr" else "fr"


def notice_hash(lang: str) -> str:
    """SHA-256 over the purpose titles and descriptions shown in ``lang`` (first 16 hex)."""
    shown = {p.value: list(PURPOSES[lang][p]) for p in CHOICE_PURPOSES}
    data = json.dumps(shown, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]
