# Writes the bundled multiple-choice demo (train.jsonl, eval.jsonl): two made-up question types, 4 choices each.
#  - "Which of these is a fruit?" with one word of the category and three of others (no context);
#  - a short context naming two objects and their colours, "What colour is the ball?" (reading).
import json, random

categories = {
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "kiwi", "pear", "peach", "plum"],
    "animal": ["cat", "dog", "horse", "lion", "mouse", "rabbit", "sheep", "tiger", "whale", "zebra"],
    "colour": ["red", "blue", "green", "yellow", "purple", "black", "white", "brown", "pink", "grey"],
    "tool": ["hammer", "saw", "drill", "wrench", "shovel", "ladder", "rake", "chisel", "axe", "pliers"],
    "city": ["paris", "london", "rome", "madrid", "berlin", "vienna", "lisbon", "dublin", "oslo", "prague"],
}
objects = ["ball", "car", "hat", "kite", "book", "cup", "chair", "boat", "lamp", "bag"]
names = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma"]

def category_item(rng):
    cat = rng.choice(list(categories))
    right = rng.choice(categories[cat])
    others = rng.sample([c for c in categories if c != cat], 3)
    choices = [right] + [rng.choice(categories[o]) for o in others]
    rng.shuffle(choices)
    article = "an" if cat[0] in "aeiou" else "a"
    return {"question": f"Which of these is {article} {cat}?", "choices": choices, "label": choices.index(right)}

def reading_item(rng):
    name = rng.choice(names)
    a, b = rng.sample(objects, 2)
    ca, cb = rng.sample(categories["colour"], 2)
    asked, colour = (a, ca) if rng.random() < 0.5 else (b, cb)
    wrong = rng.sample([c for c in categories["colour"] if c not in (ca, cb)], 2)
    choices = [colour, cb if colour == ca else ca] + wrong
    rng.shuffle(choices)
    return {"context": f"{name} has a {ca} {a} and a {cb} {b}.", "question": f"What colour is the {asked}?",
            "choices": choices, "label": choices.index(colour)}

def write(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(count):
            item = category_item(rng) if i % 2 == 0 else reading_item(rng)
            f.write(json.dumps({"id": f"{path.split('/')[-1].split('.')[0]}-{i}", **item}) + "\n")

write("demo/multiple-choice/train.jsonl", 240, 1)
write("demo/multiple-choice/eval.jsonl", 48, 2)
