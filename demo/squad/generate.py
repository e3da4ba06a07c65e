"""Writes the tiny made-up SQuAD-style demo files in this folder (Python standard library only).

train.json   SQuAD v1.1 JSON layout: 8 short paragraphs, 40 questions.
dev.jsonl    flat JSONL (Hugging Face datasets' squad columns: id, title, context, question, answers{text, answer_start}).
dev-v2.json  SQuAD v2.0 JSON layout with unanswerable questions (is_impossible, empty answers, plausible_answers).

Every paragraph is invented for SparseTune; nothing is copied from SQuAD. answer_start is found with str.find
(the n-th occurrence where a question says so), so every answer sits exactly where it says.
Run `python3 generate.py` here; the outputs are committed and re-running rewrites them byte for byte.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# (title, context, [(question, answer, occurrence)]) — occurrence 0 is the first match of the answer text.
TRAIN = [
    ("Lighthouse", "The lighthouse on Gull Point was built in 1872 by a shipwright named Tomas Berg. "
     "Its lamp burned whale oil until 1910, when the keepers switched to kerosene. "
     "The tower is 31 metres tall and painted with red and white stripes. "
     "Today it is a museum that opens every summer.",
     [("When was the lighthouse on Gull Point built?", "1872", 0),
      ("Who built the lighthouse?", "Tomas Berg", 0),
      ("What fuel did the lamp burn first?", "whale oil", 0),
      ("What did the keepers switch to in 1910?", "kerosene", 0),
      ("How tall is the tower?", "31 metres", 0),
      ("What is the lighthouse today?", "a museum", 0)]),
    ("Bakery", "Mira opened a small bakery on Willow Street in the spring of 2015. "
     "She bakes rye bread every morning at four o'clock and sells cardamom buns on Saturdays. "
     "The oven was bought second-hand from a closed hotel in Lindvik. "
     "Her brother Jonas delivers bread to three cafes by bicycle.",
     [("Where did Mira open her bakery?", "Willow Street", 0),
      ("When did the bakery open?", "the spring of 2015", 0),
      ("What does Mira bake every morning?", "rye bread", 0),
      ("What does she sell on Saturdays?", "cardamom buns", 0),
      ("Where did the oven come from?", "a closed hotel in Lindvik", 0),
      ("Who delivers the bread?", "Jonas", 0),
      ("How does Jonas deliver bread?", "by bicycle", 0)]),
    ("Comet", "Astronomers at the Karsa Observatory discovered a faint comet on 3 March 2021. "
     "They named it Karsa-7 after the observatory. "
     "The comet travels around the Sun once every 64 years, and its tail points away from the Sun because of the solar wind.",
     [("Where was the comet discovered?", "the Karsa Observatory", 0),
      ("When was the comet discovered?", "3 March 2021", 0),
      ("What was the comet named?", "Karsa-7", 0),
      ("How often does the comet travel around the Sun?", "once every 64 years", 0),
      ("Why does the tail point away from the Sun?", "because of the solar wind", 0)]),
    ("River", "The Ostra River rises in the Helm Hills and flows 240 kilometres to the sea. "
     "Salmon swim up the river each autumn to lay their eggs in gravel beds. "
     "A stone bridge with nine arches crosses the river at the town of Brede, where a mill once ground flour.",
     [("Where does the Ostra River rise?", "the Helm Hills", 0),
      ("How long is the Ostra River?", "240 kilometres", 0),
      ("Which fish swim up the river each autumn?", "Salmon", 0),
      ("Where do the salmon lay their eggs?", "in gravel beds", 0),
      ("How many arches does the bridge have?", "nine", 0),
      ("What did the mill at Brede grind?", "flour", 0)]),
    ("Robot", "The cleaning robot Pim was designed by students at the technical college in Varn. "
     "It uses four wheels and a spinning brush, and it finds its way with a small laser scanner. "
     "When its battery runs low, Pim returns to a charging dock under the stairs. "
     "A full charge takes about ninety minutes.",
     [("Who designed Pim?", "students at the technical college in Varn", 0),
      ("How many wheels does Pim use?", "four", 0),
      ("How does Pim find its way?", "with a small laser scanner", 0),
      ("Where is the charging dock?", "under the stairs", 0),
      ("How long does a full charge take?", "about ninety minutes", 0)]),
    ("Festival", "Every August the village of Sollen holds a lantern festival on the lake. "
     "Children fold paper lanterns during the week, and on Friday night hundreds of them float across the water. "
     "The festival began in 1958 to remember the fishermen lost in a storm. "
     "A brass band from the nearby town plays until midnight.",
     [("When is the lantern festival held?", "Every August", 0),
      ("Who folds the paper lanterns?", "Children", 0),
      ("When do the lanterns float across the water?", "on Friday night", 0),
      ("When did the festival begin?", "1958", 0),
      ("Whom does the festival remember?", "the fishermen lost in a storm", 0),
      ("Until when does the brass band play?", "midnight", 0)]),
    ("Garden", "The rooftop garden above the city library grows tomatoes, beans and herbs in wooden boxes. "
     "Rainwater is collected in two large barrels and used to water the plants. "
     "Volunteers meet there on Tuesday evenings, and the harvest is given to a food bank.",
     [("Where is the rooftop garden?", "above the city library", 0),
      ("What are the plants grown in?", "wooden boxes", 0),
      ("How many barrels collect rainwater?", "two", 0),
      ("When do volunteers meet?", "on Tuesday evenings", 0),
      ("Who receives the harvest?", "a food bank", 0)]),
]

# A long paragraph (about 115 words): at --max-length 128 --doc-stride 32 it needs more than one window, and the
# later questions' answers only fit whole in the second window.
LONG = ("Glass Harbour", "The town of Glass Harbour grew around a glassworks founded by the brothers Aurel and Piet Vann in 1804. "
        "Sand from the dunes north of the town was melted in coal furnaces to make bottles, window panes and lamp chimneys. "
        "At its peak the glassworks employed four hundred people, many of them children who carried molten glass between benches. "
        "In 1897 a fire destroyed the main hall, and the owners rebuilt it with brick walls and an iron roof. "
        "The works closed in 1968 when cheaper bottles arrived from abroad. "
        "The old furnace hall now houses a museum where visitors can watch glassblowers shape vases, "
        "and the harbour itself is used mostly by sailing boats and a ferry to the island of Tarn.",
        [("Who founded the glassworks?", "the brothers Aurel and Piet Vann", 0),
         ("Where did the sand come from?", "the dunes north of the town", 0),
         ("How many people did the glassworks employ at its peak?", "four hundred people", 0),
         ("What destroyed the main hall in 1897?", "a fire", 0),
         ("When did the works close?", "1968", 0),
         ("What can visitors watch in the museum?", "glassblowers shape vases", 0),
         ("Where does the ferry go?", "the island of Tarn", 0)])

DEV = [
    ("Library", "The mobile library visits the farms of the Rask valley every second Thursday. "
     "It is an old green bus with shelves for two thousand books. "
     "The driver, Elsa Dahl, has run the route since 1999 and knows most readers by name.",
     [("How often does the mobile library visit?", "every second Thursday", 0),
      ("What is the mobile library?", "an old green bus", 0),
      ("How many books fit on the shelves?", "two thousand books", 0),
      ("Who drives the bus?", "Elsa Dahl", 0),
      ("Since when has she run the route?", "1999", 0)]),
    ("Bees", "Honeybees in the orchard at Fenholt produce about forty kilograms of honey each year. "
     "The beekeeper checks the hives weekly in summer and wraps them in straw before winter. "
     "The apple trees give more fruit when the bees visit their blossoms in May.",
     [("Where are the honeybees?", "the orchard at Fenholt", 0),
      ("How much honey do the bees produce each year?", "about forty kilograms", 0),
      ("What are the hives wrapped in before winter?", "straw", 0),
      ("When do the bees visit the blossoms?", "in May", 0)]),
    ("Tram", "The first electric tram in Norrby ran in 1901 between the railway station and the harbour. "
     "It carried up to forty passengers and was painted dark blue. "
     "The line was extended to the university in 1925 and closed in 1962, when buses replaced it.",
     [("When did the first electric tram run in Norrby?", "1901", 0),
      ("How many passengers could the tram carry?", "up to forty passengers", 0),
      ("What colour was the tram?", "dark blue", 0),
      ("Where was the line extended to in 1925?", "the university", 0),
      ("What replaced the tram?", "buses", 0)]),
    LONG[:2] + ([("When was the glassworks founded?", "1804", 0),
                 ("What roof did the rebuilt hall get?", "an iron roof", 0)],),
]

DEV_V2 = [
    ("Observatory", "The hilltop observatory at Kell has a telescope with a mirror 1.2 metres wide. "
     "It was opened in 1987 by the regional university. "
     "On clear Friday nights the public may look through the telescope for a small fee.",
     [("How wide is the telescope mirror?", "1.2 metres", 0, None),
      ("Who opened the observatory?", "the regional university", 0, None),
      ("When may the public look through the telescope?", "On clear Friday nights", 0, None),
      ("Who designed the observatory building?", None, 0, "the regional university"),
      ("How much does the telescope weigh?", None, 0, None)]),
    ("Ferry", "A small ferry crosses the strait between Holm and Vesterby twelve times a day. "
     "The crossing takes twenty minutes, and bicycles travel free of charge. "
     "In winter the ferry sometimes stops when ice covers the water.",
     [("Which towns does the ferry connect?", "Holm and Vesterby", 0, None),
      ("How many times a day does the ferry cross?", "twelve times a day", 0, None),
      ("How long does the crossing take?", "twenty minutes", 0, None),
      ("What is the fare for cars?", None, 0, "free of charge"),
      ("When does the ferry sometimes stop?", "when ice covers the water", 0, None)]),
    ("Clock", "The town hall clock of Brede was made by a local smith in 1760. "
     "Its bell strikes every hour from seven in the morning until ten at night.",
     [("Who made the town hall clock?", "a local smith", 0, None),
      ("When was the clock made?", "1760", 0, None),
      ("Who repaired the clock in 1900?", None, 0, "a local smith")]),
]


def occurrence(context, text, n):
    start = -1
    for _ in range(n + 1):
        start = context.find(text, start + 1)
        if start < 0:
            raise ValueError(f"{text!r} (occurrence {n}) not in {context!r}")
    return start


def squad_v1(paragraphs, prefix):
    data, number = [], 0
    for title, context, questions in paragraphs:
        qas = []
        for question, answer, n in questions:
            number += 1
            qas.append({"id": f"{prefix}{number:03d}", "question": question,
                        "answers": [{"text": answer, "answer_start": occurrence(context, answer, n)}]})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def squad_v2(paragraphs, prefix):
    data, number = [], 0
    for title, context, questions in paragraphs:
        qas = []
        for question, answer, n, plausible in questions:
            number += 1
            qa = {"id": f"{prefix}{number:03d}", "question": question}
            if answer is None:
                qa["answers"] = []
                if plausible is not None:
                    qa["plausible_answers"] = [{"text": plausible, "answer_start": occurrence(context, plausible, 0)}]
                qa["is_impossible"] = True
            else:
                qa["answers"] = [{"text": answer, "answer_start": occurrence(context, answer, n)}]
                qa["is_impossible"] = False
            qas.append(qa)
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0", "data": data}


def write(name, text):
    with open(os.path.join(HERE, name), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


write("train.json", json.dumps(squad_v1(TRAIN + [LONG], "train-"), indent=1, ensure_ascii=False) + "\n")
lines, number = [], 0
for title, context, questions in DEV:
    for question, answer, n in questions:
        number += 1
        lines.append(json.dumps({"id": f"dev-{number:03d}", "title": title, "context": context, "question": question,
                                 "answers": {"text": [answer], "answer_start": [occurrence(context, answer, n)]}}, ensure_ascii=False))
write("dev.jsonl", "\n".join(lines) + "\n")
write("dev-v2.json", json.dumps(squad_v2(DEV_V2, "dev2-"), indent=1, ensure_ascii=False) + "\n")
