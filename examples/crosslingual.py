"""Cross-lingual similarity with the default bundle: each English sentence should be nearest its translation.

mbert-edge export default -o bundles/e5-small
python examples/crosslingual.py bundles/e5-small [BACKEND]     # BACKEND: auto (default), openvino, ...
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import mbert_edge

ENGLISH = [
    "The train to the airport leaves every twenty minutes.",
    "My grandmother grows tomatoes in her garden.",
    "The museum is closed on Mondays.",
    "Please turn off your phone during the concert.",
    "It rained all week, so the river flooded the village.",
    "She learned to play the piano when she was seven.",
]
TRANSLATIONS = {
    "de": [
        "Der Zug zum Flughafen fährt alle zwanzig Minuten.",
        "Meine Großmutter baut Tomaten in ihrem Garten an.",
        "Das Museum ist montags geschlossen.",
        "Bitte schalten Sie Ihr Handy während des Konzerts aus.",
        "Es hat die ganze Woche geregnet, deshalb hat der Fluss das Dorf überschwemmt.",
        "Sie hat mit sieben Jahren Klavier spielen gelernt.",
    ],
    "fr": [
        "Le train pour l'aéroport part toutes les vingt minutes.",
        "Ma grand-mère cultive des tomates dans son jardin.",
        "Le musée est fermé le lundi.",
        "Veuillez éteindre votre téléphone pendant le concert.",
        "Il a plu toute la semaine, alors la rivière a inondé le village.",
        "Elle a appris à jouer du piano à sept ans.",
    ],
    "es": [
        "El tren al aeropuerto sale cada veinte minutos.",
        "Mi abuela cultiva tomates en su jardín.",
        "El museo cierra los lunes.",
        "Por favor, apague su teléfono durante el concierto.",
        "Llovió toda la semana, así que el río inundó el pueblo.",
        "Aprendió a tocar el piano cuando tenía siete años.",
    ],
    "ru": [
        "Поезд в аэропорт отправляется каждые двадцать минут.",
        "Моя бабушка выращивает помидоры в своём саду.",
        "Музей закрыт по понедельникам.",
        "Пожалуйста, выключите телефон во время концерта.",
        "Всю неделю шёл дождь, и река затопила деревню.",
        "Она научилась играть на пианино в семь лет.",
    ],
    "ar": [
        "يغادر القطار إلى المطار كل عشرين دقيقة.",
        "جدتي تزرع الطماطم في حديقتها.",
        "المتحف مغلق أيام الاثنين.",
        "يرجى إغلاق هاتفك أثناء الحفل.",
        "أمطرت طوال الأسبوع، ففاض النهر وأغرق القرية.",
        "تعلمت العزف على البيانو عندما كانت في السابعة.",
    ],
    "hi": [
        "हवाई अड्डे के लिए ट्रेन हर बीस मिनट में निकलती है।",
        "मेरी दादी अपने बगीचे में टमाटर उगाती हैं।",
        "संग्रहालय सोमवार को बंद रहता है।",
        "कृपया संगीत कार्यक्रम के दौरान अपना फ़ोन बंद कर दें।",
        "पूरे हफ़्ते बारिश हुई, इसलिए नदी ने गाँव में बाढ़ ला दी।",
        "उसने सात साल की उम्र में पियानो बजाना सीखा।",
    ],
    "zh": [
        "去机场的火车每二十分钟一班。",
        "我奶奶在她的花园里种西红柿。",
        "博物馆周一闭馆。",
        "音乐会期间请关闭手机。",
        "下了一整周的雨，河水淹没了村庄。",
        "她七岁时学会了弹钢琴。",
    ],
    "ja": [
        "空港行きの電車は二十分ごとに出発します。",
        "祖母は庭でトマトを育てています。",
        "博物館は月曜日が休館です。",
        "コンサート中は携帯電話の電源をお切りください。",
        "一週間ずっと雨が降り、川が村を水浸しにした。",
        "彼女は七歳のときにピアノを習った。",
    ],
}


def main(bundle: str, backend: str = "auto") -> int:
    start = time.perf_counter()
    model = mbert_edge.load(bundle, backend=backend)
    print(f"loaded {bundle} in {time.perf_counter() - start:.2f} s: {model!r}")

    others = [(lang, i, text) for lang, texts in TRANSLATIONS.items() for i, text in enumerate(texts)]
    all_texts = ENGLISH + [t for _, _, t in others]
    model.embed(all_texts[:4])  # warm-up

    start = time.perf_counter()
    english = model.embed(ENGLISH)
    foreign = model.embed([t for _, _, t in others])
    batch_ms = (time.perf_counter() - start) * 1000 / len(all_texts)
    single = []
    for text in all_texts[:20]:
        t0 = time.perf_counter()
        model.embed(text)
        single.append((time.perf_counter() - t0) * 1000)

    sims = english @ foreign.T  # unit vectors: dot product = cosine similarity
    print(f"\nEach English sentence against all {len(others)} sentences in {len(TRANSLATIONS)} other languages:")
    correct_total = 0
    for i, sentence in enumerate(ENGLISH):
        per_lang = []
        for lang in TRANSLATIONS:
            cols = [k for k, (lg, _, _) in enumerate(others) if lg == lang]
            best = cols[int(np.argmax(sims[i, cols]))]
            per_lang.append(others[best][1] == i)
        correct_total += sum(per_lang)
        best = int(np.argmax(sims[i]))
        lang, j, text = others[best]
        mark = "ok" if j == i else "WRONG"
        print(f"  [{mark:>5}] {sentence}\n          nearest: ({lang}, cos {sims[i, best]:.3f}) {text}")
        print(f"          own translation is nearest within {sum(per_lang)}/{len(per_lang)} languages")
    n = len(ENGLISH) * len(TRANSLATIONS)
    print(f"\n{correct_total}/{n} (English sentence, language) pairs: the nearest sentence is the translation")
    print(
        f"time per text: {batch_ms:.1f} ms in batches, {statistics.median(single):.1f} ms one at a time "
        f"(median of {len(single)})"
    )
    return 0 if correct_total == n else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]) if len(sys.argv) > 1 else main("bundles/e5-small"))
