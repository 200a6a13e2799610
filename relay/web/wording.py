"""The words of the recipient pages, in French and English (purposes are in ``i18n``).

Stage: pure vocabulary of the web pages.
Rule 1: a text may name ``{name}`` (the controller's name, or "the sender" when the relay
        serves one implicit controller), ``{address}`` (the recipient's masked address) and
        ``{parties}`` (the third parties); ``relay.web.notice`` fills them.
Rule 2: the consent, preference and withdrawal pages say who asks, for which address, what each
        purpose means, and that consent can be withdrawn at any time as easily as given; the
        done pages say what happens next. A recipient under the legacy regime (recommendation
        section 7) never consented: the texts for them speak of objecting.
"""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "switch": "English",
        "sender": "l'expéditeur de ces e-mails",
        "sender_title": "L'expéditeur",
        "providers": " et ses prestataires",
        "providers_named": " et ses prestataires ({parties})",
        "who_line": "Expéditeur : {name}",
        "address_line": "Adresse e-mail concernée : {address}",
        "parties": "Tiers qui utilisent ces traceurs : {parties}.",
        "parties_none": "{name} ne déclare aucun tiers utilisant ces traceurs.",
        "privacy": "Politique de confidentialité de {name}",
        "contact": "Contact : ",
        # Consent page (a link in a consent request email).
        "consent_title": "{name} vous demande votre accord",
        "consent_intro": "{name} souhaite utiliser des traceurs (pixels de suivi) dans les "
        "e-mails qu'il vous envoie à l'adresse {address}, sur tous les appareils où vous les "
        "lisez. Choisissez finalité par finalité ; refuser est aussi simple qu'accepter. Ne "
        "rien faire vaut refus.",
        "withdraw_how": "Vous pourrez retirer votre consentement à tout moment, aussi "
        "facilement que vous l'avez donné : chaque e-mail qui contient ces traceurs porte en "
        "bas un lien de retrait, et le centre de préférences permet de changer chaque choix.",
        # Preference centre.
        "prefs_title": "Vos choix de suivi des e-mails",
        "prefs_intro": "Choisissez, finalité par finalité, si {name} peut utiliser des "
        "traceurs (pixels de suivi) dans les e-mails qu'il envoie à l'adresse {address}. "
        "Refuser est aussi simple qu'accepter ; vous pouvez changer d'avis à tout moment. Ne "
        "rien choisir vaut refus.",
        "to_withdraw": "Tout arrêter d'un clic : page de retrait",
        "to_prefs": "Choisir finalité par finalité : centre de préférences",
        # Withdrawal page.
        "withdraw_title": "Arrêter le suivi de vos e-mails",
        "withdraw_intro": "Les e-mails que {name} envoie à l'adresse {address} peuvent "
        "contenir des traceurs (pixels de suivi) soumis à votre consentement. Un clic sur le "
        "bouton retire votre consentement pour toutes les finalités, y compris lorsque vous "
        "rouvrez d'anciens e-mails. Vous continuerez à recevoir les e-mails : ce n'est pas un "
        "désabonnement.",
        "tracked_now": "Suivi actuellement autorisé",
        "tracked_none": "Aucun suivi soumis à consentement n'est actuellement autorisé.",
        "stop": "Arrêter le suivi",
        # Withdrawal page of a legacy recipient (section 7): an objection.
        "object_title": "Vous opposer au suivi de vos e-mails",
        "object_intro": "Votre adresse {address} ayant été collectée avant le 14 avril 2026, "
        "{name} peut utiliser des traceurs (pixels de suivi) dans les e-mails qu'il vous envoie "
        "tant que vous ne vous y opposez pas. Un clic sur le bouton enregistre votre "
        "opposition : ce suivi s'arrête, y compris lorsque vous rouvrez d'anciens e-mails. Vous "
        "continuerez à recevoir les e-mails : ce n'est pas un désabonnement.",
        "tracked_legacy": "Suivi actuellement utilisé",
        "object": "Je m'oppose au suivi",
        "more": "En savoir plus",
        # Done pages.
        "withdrawn_title": "Suivi arrêté",
        "withdrawn_body": "Votre consentement est retiré pour toutes les finalités.",
        "withdrawn_next": "Et maintenant : les prochains e-mails de {name} à l'adresse "
        "{address} ne contiendront plus ces traceurs, et les anciens e-mails ne pourront plus "
        "signaler leur ouverture. Vous continuez à recevoir les e-mails. Vous pouvez redonner "
        "votre consentement à tout moment dans le centre de préférences.",
        "objected_title": "Votre opposition est enregistrée",
        "objected_body": "Vous vous êtes opposé au suivi de vos e-mails par {name}.",
        "objected_next": "Et maintenant : les prochains e-mails de {name} à l'adresse "
        "{address} ne contiendront plus ces traceurs, et les anciens e-mails ne pourront plus "
        "signaler leur ouverture. Vous continuez à recevoir les e-mails. Le centre de "
        "préférences vous permet, si vous le souhaitez, d'accepter une finalité plus tard.",
        "saved_title": "Vos choix sont enregistrés",
        "saved_body": "Vos choix pour les e-mails de {name} à l'adresse {address} :",
        "saved_next": "Et maintenant : ils s'appliquent dès le prochain e-mail, et aux anciens "
        "e-mails rouverts. Vous pouvez les changer ou tout retirer à tout moment, aussi "
        "facilement, depuis le centre de préférences ou le lien en bas de chaque e-mail suivi.",
        "open_prefs": "Ouvrir le centre de préférences",
        # Choices.
        "accept": "Accepter",
        "refuse": "Refuser",
        "accept_all": "Tout accepter",
        "refuse_all": "Tout refuser",
        "save": "Enregistrer mes choix",
        "granted": "accepté",
        "refused": "refusé",
        "withdrawn": "retiré",
        "expired": "expiré",
        "none": "pas de choix (vaut refus)",
        "current": "Choix actuel",
        # Errors.
        "error_title": "Ce lien ne peut pas être utilisé",
        "error_malformed": "Ce lien est incomplet ou abîmé. Copiez le lien entier depuis l'e-mail.",
        "error_forged": "Ce lien n'a pas été émis par nous ou a été modifié.",
        "error_unknown key": "Ce lien a été signé avec une clé qui n'est plus en service.",
        "error_expired": "Ce lien a expiré. Utilisez le lien d'un e-mail plus récent.",
        "error_wrong kind": "Ce lien ne correspond pas à cette page.",
        "error_unknown": "Nous ne retrouvons pas le destinataire de ce lien. Utilisez le lien "
        "d'un e-mail plus récent.",
        "error_controller": "Ce lien appartient à un expéditeur que ce service ne gère plus. "
        "Utilisez le lien d'un e-mail plus récent ou contactez l'expéditeur.",
        "error_nonce": "Ce formulaire a expiré ou a déjà été utilisé depuis une autre page. "
        "Rechargez la page puis cliquez de nouveau.",
        "error_notice": "Le texte de cette page a changé depuis que vous l'avez ouverte ; rien "
        "n'a été enregistré. Rechargez la page pour lire le nouveau texte.",
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
        "sender": "the sender of these emails",
        "sender_title": "The sender",
        "providers": " and its service providers",
        "providers_named": " and its service providers ({parties})",
        "who_line": "Sender: {name}",
        "address_line": "Email address concerned: {address}",
        "parties": "Third parties that use these trackers: {parties}.",
        "parties_none": "{name} declares no third party using these trackers.",
        "privacy": "Privacy policy of {name}",
        "contact": "Contact: ",
        "consent_title": "{name} asks for your agreement",
        "consent_intro": "{name} would like to use trackers (tracking pixels) in the emails it "
        "sends to {address}, on every device where you read them. Choose purpose by purpose; "
        "refusing is as easy as accepting. Doing nothing means refusal.",
        "withdraw_how": "You can withdraw your consent at any time, as easily as you give it: "
        "every email that contains these trackers has a withdrawal link at its foot, and the "
        "preference centre lets you change each choice.",
        "prefs_title": "Your email tracking choices",
        "prefs_intro": "Choose, purpose by purpose, whether {name} may use trackers (tracking "
        "pixels) in the emails it sends to {address}. Refusing is as easy as accepting; you "
        "can change your mind at any time. Making no choice means refusal.",
        "to_withdraw": "Stop everything in one click: withdrawal page",
        "to_prefs": "Choose purpose by purpose: preference centre",
        "withdraw_title": "Stop tracking of your emails",
        "withdraw_intro": "Emails {name} sends to {address} may contain trackers (tracking "
        "pixels) that rely on your consent. One click on the button withdraws your consent for "
        "every purpose, including when you re-open old emails. You will keep receiving the "
        "emails: this is not an unsubscription.",
        "tracked_now": "Tracking currently allowed",
        "tracked_none": "No consent-based tracking is currently allowed.",
        "stop": "Stop tracking",
        "object_title": "Object to the tracking of your emails",
        "object_intro": "Your address {address} was collected before 14 April 2026, so {name} "
        "may use trackers (tracking pixels) in the emails it sends you for as long as you do "
        "not object. One click on the button records your objection: this tracking stops, "
        "including when you re-open old emails. You will keep receiving the emails: this is "
        "not an unsubscription.",
        "tracked_legacy": "Tracking currently in use",
        "object": "I object to tracking",
        "more": "Learn more",
        "withdrawn_title": "Tracking stopped",
        "withdrawn_body": "Your consent is withdrawn for every purpose.",
        "withdrawn_next": "What happens next: future emails from {name} to {address} will not "
        "carry these trackers, and old emails can no longer report that they were opened. You "
        "keep receiving the emails. You can give your consent again at any time in the "
        "preference centre.",
        "objected_title": "Your objection is recorded",
        "objected_body": "You objected to the tracking of your emails by {name}.",
        "objected_next": "What happens next: future emails from {name} to {address} will not "
        "carry these trackers, and old emails can no longer report that they were opened. You "
        "keep receiving the emails. The preference centre lets you accept a purpose later, if "
        "you wish.",
        "saved_title": "Your choices are saved",
        "saved_body": "Your choices for the emails from {name} to {address}:",
        "saved_next": "What happens next: they apply from the next email on, and to old emails "
        "when re-opened. You can change or withdraw them at any time, just as easily, from the "
        "preference centre or the link at the foot of every tracked email.",
        "open_prefs": "Open the preference centre",
        "accept": "Accept",
        "refuse": "Refuse",
        "accept_all": "Accept all",
        "refuse_all": "Refuse all",
        "save": "Save my choices",
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
        "error_controller": "This link belongs to a sender this service no longer handles. Use "
        "the link in a more recent email or contact the sender.",
        "error_nonce": "This form has expired or was already used from another page. Reload "
        "the page and click again.",
        "error_notice": "The text of this page changed since you opened it; nothing was "
        "recorded. Reload the page to read the new text.",
        "error_unavailable": "The service is temporarily unavailable; nothing was recorded. "
        "Please try again in a few minutes.",
        "error_notfound": "This page does not exist.",
        "error_method": "This action is not allowed here.",
        "error_badrequest": "This request could not be understood; nothing was recorded.",
        "error_internal": "An unexpected error occurred; nothing was recorded.",
        "reload": "Reload the page",
    },
}
