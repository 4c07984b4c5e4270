"""Seeded synthetic biographies in the style of the bioS dataset (Allen-Zhu & Li) used by the paper.

Each person gets a unique full name, a pronoun (he, she, or for a small seeded share of people they), a
birth date (1900-2005), a birth city with its country, a university, a major and an employer, drawn from the
word pools below. A biography is one sentence per field; the first sentence has the tagged name as its
subject and every later sentence the person's pronoun, so the fields mentioned last sit far from the name.
With ``template="paper"`` (the default) every sentence is the paper's frame for its field, exactly as in the
paper's example biography::

    <name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He spent his early years in
    <city>Melbourne, Australia</city>. He received mentorship and guidance from faculty members at
    <university>Sorbonne University</university>. He completed his education with a focus on
    <major>Biomedical Engineering</major>. He had a professional role at <company>the British Museum</company>.

(She/her for women; "They were born on", "They spent their early years in", ... for they-people; a name as
subject always takes "was".) ``template="varied"`` draws one of five frames per field instead. Every frame
starts with its subject, so any ``field_order`` reads naturally: a permuted biography opens with the name in
its first field's frame, e.g. ``"<name>Liam Thompson</name> had a professional role at ..."``.

Every tagged value is exactly the gold answer of the closed-book question for that field (see
``data/prompts.csv``); nothing else is inside a tag. People are drawn with one ``random.Random(seed)``, the
permuted orders and the varied frames each with their own stream, so the same arguments always give the same
bytes, and the people depend on neither ``field_order`` nor ``template``.

The pools are hand-written for this project. They deliberately contain no surname of the real people in
``data/biography_fewshot.csv`` (see :data:`FEWSHOT_PEOPLE`), and those full names are also excluded
explicitly, so a few-shot example can never share a name with a synthetic person.
"""

from __future__ import annotations

import calendar
import datetime
import logging
import numbers
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from elusive.artifacts import atomic_path
from elusive.errors import InputError

log = logging.getLogger(__name__)

ATTRIBUTE_FIELDS = ("date", "city", "university", "major", "company")
"""The five non-name fields, in the ``"fixed"`` order."""

FIELD_ORDER_MODES = ("fixed", "permuted")

TEMPLATE_MODES = ("paper", "varied")
"""``template`` values: the paper's one frame per field, or several frames per field drawn at random."""

# --------------------------------------------------------------------------------------------------
# Word pools (hand-written; no gender-ambiguous first names, so a first name determines the pronoun).
# --------------------------------------------------------------------------------------------------

MALE_FIRST_NAMES = (
    "Liam", "Noah", "Oliver", "Elijah", "James", "William", "Benjamin", "Lucas", "Henry", "Theodore",
    "Jack", "Levi", "Alexander", "Mateo", "Daniel", "Michael", "Mason", "Sebastian", "Ethan", "Logan",
    "Owen", "Samuel", "Jacob", "Asher", "Aiden", "John", "Joseph", "Wyatt", "David", "Leo",
    "Luke", "Julian", "Hudson", "Grayson", "Matthew", "Ezra", "Gabriel", "Carter", "Isaac", "Jayden",
    "Luca", "Anthony", "Dylan", "Lincoln", "Thomas", "Elias", "Josiah", "Charles", "Caleb", "Christopher",
    "Ezekiel", "Miles", "Jaxon", "Isaiah", "Andrew", "Joshua", "Nathan", "Nolan", "Adrian", "Santiago",
    "Eli", "Aaron", "Ryan", "Cooper", "Easton", "Christian", "Landon", "Colton", "Roman", "Axel",
    "Jonathan", "Robert", "Jameson", "Ian", "Everett", "Wesley", "Jeremiah", "Leonardo", "Jose", "Silas",
    "Nicholas", "Beau", "Weston", "Austin", "Connor", "Carson", "Dominic", "Xavier", "Jason", "Declan",
    "Emmett", "Victor", "Harrison", "Vincent", "Edward", "Patrick", "Arthur", "George", "Frederick", "Walter",
    "Harold", "Albert", "Raymond", "Eugene", "Ralph", "Howard", "Kenneth", "Richard", "Donald", "Gregory",
    "Peter", "Douglas", "Stanley", "Leonard", "Bernard", "Gerald", "Roger", "Philip", "Martin", "Dennis",
    "Louis", "Stephen", "Frank", "Gordon", "Marcus", "Oscar", "Felix", "Hugo", "Rafael", "Diego",
    "Pablo", "Carlos", "Miguel", "Andre", "Tobias", "Magnus", "Anders", "Lars", "Sven", "Henrik",
    "Matthias", "Stefan", "Klaus", "Dmitri", "Ivan", "Nikolai", "Pavel", "Viktor", "Kenji", "Hiroshi",
    "Takeshi", "Arjun", "Rohan", "Vikram", "Rahul", "Omar", "Tariq", "Karim", "Yusuf", "Emeka",
    "Kwame", "Chidi", "Mehmet", "Emre", "Giovanni", "Marco", "Matteo", "Lorenzo", "Paolo", "Pierre",
    "Mathieu", "Bruno", "Rodrigo", "Joaquin", "Ignacio", "Colin", "Malcolm", "Angus", "Rhys", "Gareth",
)

FEMALE_FIRST_NAMES = (
    "Olivia", "Emma", "Charlotte", "Amelia", "Sophia", "Isabella", "Ava", "Mia", "Evelyn", "Luna",
    "Harper", "Camila", "Scarlett", "Elizabeth", "Eleanor", "Emily", "Chloe", "Mila", "Violet", "Penelope",
    "Gianna", "Aria", "Abigail", "Ella", "Hazel", "Nora", "Layla", "Lily", "Aurora", "Nova",
    "Ellie", "Madison", "Grace", "Isla", "Willow", "Zoe", "Stella", "Victoria", "Emilia", "Everly",
    "Hannah", "Lillian", "Addison", "Leah", "Lucy", "Eliana", "Ivy", "Natalie", "Audrey", "Delilah",
    "Claire", "Savannah", "Anna", "Maya", "Alice", "Sadie", "Caroline", "Naomi", "Valentina", "Ruby",
    "Eva", "Autumn", "Hailey", "Gabriella", "Ariana", "Allison", "Aaliyah", "Josephine", "Madelyn", "Margaret",
    "Dorothy", "Helen", "Ruth", "Frances", "Virginia", "Mildred", "Florence", "Irene", "Louise", "Edith",
    "Gladys", "Marie", "Catherine", "Ethel", "Lucille", "Beatrice", "Agnes", "Bernice", "Doris", "Vivian",
    "Pauline", "Martha", "Gloria", "Judith", "Barbara", "Patricia", "Linda", "Carol", "Sandra", "Nancy",
    "Deborah", "Sharon", "Karen", "Donna", "Cynthia", "Pamela", "Janet", "Diane", "Joyce", "Rebecca",
    "Christina", "Rachel", "Laura", "Heather", "Amanda", "Melissa", "Jessica", "Jennifer", "Stephanie", "Nicole",
    "Kimberly", "Angela", "Michelle", "Julia", "Sarah", "Ingrid", "Astrid", "Freya", "Sigrid", "Greta",
    "Katarina", "Anastasia", "Tatiana", "Svetlana", "Irina", "Yuki", "Sakura", "Akiko", "Mei", "Priya",
    "Ananya", "Kavya", "Aisha", "Fatima", "Leila", "Amara", "Chiamaka", "Zainab", "Ayla", "Elif",
    "Giulia", "Francesca", "Chiara", "Alessia", "Camille", "Amelie", "Juliette", "Margot", "Lucia", "Carmen",
    "Ximena", "Paula", "Fiona", "Siobhan", "Niamh", "Eilidh", "Bronwen", "Carys", "Lowri", "Ines",
    "Beatriz", "Helena", "Rosalind", "Miriam", "Esther", "Harriet", "Matilda", "Imogen", "Philippa", "Thea",
)

LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
    "Stewart", "Morris", "Morales", "Murphy", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Peterson", "Bailey",
    "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez",
    "Wood", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders",
    "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell",
    "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes", "Fisher", "Vasquez", "Simmons", "Romero",
    "Patterson", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes",
    "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford",
    "Castro", "Marshall", "Owens", "Fernandez", "McDonald", "Woods", "Wells", "Vargas", "Chen", "Freeman",
    "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Mendez", "Silva",
    "Shaw", "Snyder", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black",
    "Robertson", "Boyd", "Stone", "Salazar", "Fox", "Warren", "Mills", "Meyer", "Rice", "Schmidt",
    "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver", "Gardner", "Payne", "Grant",
    "Dunn", "Hawkins", "Arnold", "Pierce", "Hansen", "Peters", "Santos", "Hart", "Bradley", "Knight",
    "Elliott", "Cunningham", "Armstrong", "Carroll", "Lane", "Andrews", "Berry", "Perkins", "Hoffman", "Johnston",
    "Matthews", "Richards", "Willis", "Carpenter", "Sandoval", "Fischer", "Becker", "Schneider", "Weber", "Schulz",
    "Keller", "Novak", "Kowalski", "Nowak", "Horvat", "Larsen", "Nielsen", "Johansson", "Lindqvist", "Berg",
    "Virtanen", "Korhonen", "Ivanov", "Petrov", "Sokolov", "Popescu", "Dubois", "Lefebvre", "Moreau", "Rossi",
    "Russo", "Esposito", "Bianchi", "Romano", "Conti", "Costa", "Pereira", "Oliveira", "Almeida", "Tanaka",
    "Suzuki", "Watanabe", "Yamamoto", "Nakamura", "Kobayashi", "Sato", "Park", "Choi", "Wang", "Zhang",
    "Liu", "Yang", "Zhao", "Zhou", "Xu", "Sharma", "Gupta", "Singh", "Kumar", "Reddy",
    "Iyer", "Mehta", "Okafor", "Adeyemi", "Mensah", "Osei", "Kariuki", "Mwangi", "Haddad", "Nasser",
    "Yilmaz", "Kaya", "Demir", "Cohen", "Friedman", "O'Brien", "O'Connor", "Byrne", "Doyle", "Walsh",
    "Fitzgerald", "MacLeod", "Fraser", "Morrison", "Lloyd", "Griffiths", "Thornton", "Whitfield", "Ashford", "Blackwood",
)

_CITIES_BY_COUNTRY: dict[str, tuple[str, ...]] = {
    "USA": (
        "New York City", "Los Angeles", "Chicago", "Houston", "Dallas", "Miami", "Philadelphia", "Atlanta",
        "Boston", "Phoenix", "Detroit", "Seattle", "San Francisco", "San Diego", "Minneapolis", "Denver",
        "Baltimore", "Nashville", "Portland", "Austin", "Honolulu", "Anchorage", "New Orleans", "Pittsburgh",
        "Cleveland", "Cincinnati", "Kansas City", "Salt Lake City", "Las Vegas", "Sacramento",
    ),
    "Canada": ("Toronto", "Montreal", "Vancouver", "Calgary", "Ottawa"),
    "Mexico": ("Mexico City", "Guadalajara", "Monterrey"),
    "Cuba": ("Havana",),
    "Jamaica": ("Kingston",),
    "Brazil": ("Rio de Janeiro", "Belo Horizonte"),
    "Argentina": ("Buenos Aires",),
    "Chile": ("Santiago",),
    "Peru": ("Lima",),
    "Venezuela": ("Caracas",),
    "Ecuador": ("Quito",),
    "Uruguay": ("Montevideo",),
    "United Kingdom": (
        "London", "Edinburgh", "Glasgow", "Manchester", "Liverpool", "Birmingham", "Leeds", "Bristol", "Cardiff",
        "Belfast",
    ),
    "Ireland": ("Dublin", "Cork"),
    "France": ("Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Bordeaux"),
    "Belgium": ("Brussels", "Antwerp"),
    "Netherlands": ("Amsterdam", "Rotterdam", "The Hague"),
    "Germany": ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Stuttgart"),
    "Austria": ("Vienna",),
    "Switzerland": ("Zurich", "Geneva"),
    "Italy": ("Rome", "Milan", "Naples", "Turin", "Florence", "Venice"),
    "Spain": ("Madrid", "Barcelona", "Seville", "Valencia"),
    "Portugal": ("Lisbon", "Porto"),
    "Denmark": ("Copenhagen",),
    "Sweden": ("Stockholm", "Gothenburg"),
    "Norway": ("Oslo", "Bergen"),
    "Finland": ("Helsinki",),
    "Iceland": ("Reykjavik",),
    "Poland": ("Warsaw", "Krakow"),
    "Czech Republic": ("Prague",),
    "Hungary": ("Budapest",),
    "Romania": ("Bucharest",),
    "Serbia": ("Belgrade",),
    "Croatia": ("Zagreb",),
    "Greece": ("Athens", "Thessaloniki"),
    "Ukraine": ("Kyiv",),
    "Belarus": ("Minsk",),
    "Latvia": ("Riga",),
    "Lithuania": ("Vilnius",),
    "Estonia": ("Tallinn",),
    "Russia": ("Moscow", "Saint Petersburg"),
    "Turkey": ("Istanbul", "Ankara"),
    "Egypt": ("Cairo", "Alexandria"),
    "Morocco": ("Casablanca", "Marrakesh"),
    "Tunisia": ("Tunis",),
    "Algeria": ("Algiers",),
    "Sudan": ("Khartoum",),
    "Nigeria": ("Lagos",),
    "Ghana": ("Accra",),
    "Ivory Coast": ("Abidjan",),
    "Senegal": ("Dakar",),
    "DR Congo": ("Kinshasa",),
    "Angola": ("Luanda",),
    "Kenya": ("Nairobi",),
    "Ethiopia": ("Addis Ababa",),
    "Uganda": ("Kampala",),
    "Tanzania": ("Dar es Salaam",),
    "South Africa": ("Johannesburg", "Cape Town", "Durban"),
    "Israel": ("Tel Aviv",),
    "Jordan": ("Amman",),
    "Lebanon": ("Beirut",),
    "Iraq": ("Baghdad",),
    "Iran": ("Tehran",),
    "Saudi Arabia": ("Riyadh",),
    "United Arab Emirates": ("Dubai",),
    "Qatar": ("Doha",),
    "Pakistan": ("Karachi", "Lahore"),
    "India": (
        "Delhi", "Mumbai", "Kolkata", "Bangalore", "Chennai", "Hyderabad", "Ahmedabad", "Surat", "Pune",
    ),
    "Bangladesh": ("Dhaka",),
    "Sri Lanka": ("Colombo",),
    "Nepal": ("Kathmandu",),
    "Myanmar": ("Yangon",),
    "Thailand": ("Bangkok",),
    "Vietnam": ("Ho Chi Minh City", "Hanoi"),
    "Malaysia": ("Kuala Lumpur",),
    "Indonesia": ("Jakarta",),
    "Philippines": ("Manila",),
    "China": (
        "Shanghai", "Beijing", "Chongqing", "Tianjin", "Guangzhou", "Shenzhen", "Chengdu", "Nanjing", "Wuhan",
        "Hangzhou", "Shenyang", "Suzhou", "Harbin", "Qingdao", "Dalian", "Hong Kong",
    ),
    "Taiwan": ("Taipei",),
    "South Korea": ("Seoul", "Busan"),
    "Japan": ("Tokyo", "Osaka", "Nagoya", "Fukuoka", "Kyoto", "Yokohama", "Sapporo", "Kobe"),
    "Australia": ("Melbourne", "Sydney", "Brisbane", "Perth", "Adelaide"),
    "New Zealand": ("Auckland", "Wellington"),
}

CITIES = tuple(f"{city}, {country}" for country, cities in _CITIES_BY_COUNTRY.items() for city in cities)
"""Birth cities, each with its country (``"Oslo, Norway"``, as in the paper's example; ``"USA"`` as in the
paper's released data); the whole string is the gold answer of the city question."""

UNIVERSITIES = (
    "Harvard University", "Stanford University", "the Massachusetts Institute of Technology", "Princeton University",
    "Yale University", "Columbia University", "the University of Chicago", "the University of Pennsylvania",
    "Cornell University", "Brown University", "Dartmouth College", "Duke University", "Northwestern University",
    "Johns Hopkins University", "the California Institute of Technology", "the University of California, Berkeley",
    "the University of California, Los Angeles", "the University of California, San Diego",
    "the University of California, Davis", "the University of California, Irvine",
    "the University of California, Santa Barbara", "the University of Michigan", "New York University",
    "Carnegie Mellon University", "Georgetown University", "Rice University", "Vanderbilt University",
    "Emory University", "the University of Notre Dame", "the University of Virginia",
    "the University of Southern California", "Tufts University", "Boston University", "Boston College",
    "the University of North Carolina at Chapel Hill", "the University of Texas at Austin",
    "the University of Washington", "the University of Wisconsin-Madison",
    "the University of Illinois Urbana-Champaign", "Purdue University", "the Ohio State University",
    "Pennsylvania State University", "the University of Florida", "the University of Minnesota",
    "the University of Maryland", "Rutgers University", "the Georgia Institute of Technology",
    "Texas A&M University", "Arizona State University", "the University of Arizona",
    "the University of Colorado Boulder", "the University of Utah", "the University of Rochester",
    "Brandeis University", "Case Western Reserve University", "Williams College", "Amherst College",
    "Swarthmore College", "Wellesley College", "Oberlin College", "Middlebury College", "Vassar College",
    "the University of Pittsburgh", "the University of Iowa", "Indiana University Bloomington",
    "Michigan State University", "the University of Oregon", "the University of Georgia",
    "Florida State University", "the University of Miami", "Tulane University", "Syracuse University",
    "Northeastern University", "George Washington University", "Baylor University", "the University of Alabama",
    "Clemson University", "the University of Kansas", "the University of Missouri", "Iowa State University",
    "Virginia Tech", "Rensselaer Polytechnic Institute", "Worcester Polytechnic Institute",
    "the University of Connecticut", "the University of Massachusetts Amherst", "Stony Brook University",
    "Howard University", "Spelman College", "Morehouse College", "the University of Toronto", "McGill University",
    "the University of British Columbia", "McMaster University", "Queen's University", "the University of Alberta",
    "the University of Waterloo", "Imperial College London", "University College London",
    "the London School of Economics", "King's College London", "the University of Edinburgh",
    "the University of Manchester", "the University of Bristol", "the University of Warwick", "Durham University",
    "the University of Glasgow", "the University of St Andrews", "the University of Birmingham",
    "the University of Leeds", "the University of Sheffield", "the University of Nottingham",
    "the University of Southampton", "Trinity College Dublin", "University College Dublin", "ETH Zurich",
    "the University of Zurich", "the University of Geneva", "the University of Basel", "Heidelberg University",
    "the Ludwig Maximilian University of Munich", "the Technical University of Munich",
    "Humboldt University of Berlin", "the Free University of Berlin", "the University of Bonn",
    "the University of Freiburg", "the University of Hamburg", "the University of Cologne", "RWTH Aachen University",
    "the University of Vienna", "Sorbonne University", "Sciences Po", "the University of Amsterdam",
    "Leiden University", "Utrecht University", "Delft University of Technology", "KU Leuven", "Ghent University",
    "the University of Copenhagen", "Aarhus University", "Lund University", "Uppsala University",
    "Stockholm University", "the Karolinska Institute", "the University of Oslo", "the University of Helsinki",
    "Aalto University", "the University of Bologna", "Sapienza University of Rome", "the University of Padua",
    "the University of Milan", "Bocconi University", "the Polytechnic University of Milan",
    "the University of Barcelona", "the Complutense University of Madrid", "the University of Lisbon",
    "the University of Coimbra", "Charles University", "the University of Warsaw", "Jagiellonian University",
    "the National and Kapodistrian University of Athens", "Lomonosov Moscow State University",
    "Saint Petersburg State University", "the Hebrew University of Jerusalem", "Tel Aviv University",
    "the University of Tokyo", "Kyoto University", "Osaka University", "Tohoku University", "Keio University",
    "Waseda University", "Seoul National University", "Yonsei University", "Korea University", "Peking University",
    "Tsinghua University", "Fudan University", "Zhejiang University", "Shanghai Jiao Tong University",
    "Nanjing University", "the University of Hong Kong", "the Chinese University of Hong Kong",
    "National Taiwan University", "the National University of Singapore", "Nanyang Technological University",
    "the Indian Institute of Science", "the Indian Institute of Technology Bombay",
    "the Indian Institute of Technology Delhi", "the University of Delhi", "Jawaharlal Nehru University",
    "the University of Melbourne", "the University of Sydney", "the Australian National University",
    "the University of Queensland", "Monash University", "the University of New South Wales",
    "the University of Auckland", "the University of Otago", "the University of Cape Town",
    "the University of the Witwatersrand", "Stellenbosch University", "the University of Nairobi",
    "Makerere University", "the University of Ibadan", "the University of Lagos", "the University of Ghana",
    "Cairo University", "the American University of Beirut", "the University of Buenos Aires",
    "the National Autonomous University of Mexico", "the Pontifical Catholic University of Chile",
    "the University of Chile",
)

MAJORS = (
    "Computer Science", "Mechanical Engineering", "Electrical Engineering", "Civil Engineering",
    "Chemical Engineering", "Biomedical Engineering", "Aerospace Engineering", "Industrial Engineering",
    "Materials Science", "Environmental Engineering", "Mathematics", "Applied Mathematics", "Statistics",
    "Physics", "Astronomy", "Chemistry", "Biochemistry", "Biology", "Molecular Biology", "Neuroscience",
    "Genetics", "Microbiology", "Ecology", "Marine Biology", "Geology", "Earth Sciences", "Atmospheric Science",
    "Economics", "Finance", "Accounting", "Business Administration", "Marketing", "Management",
    "International Relations", "Political Science", "Sociology", "Psychology", "Anthropology", "Archaeology",
    "Linguistics", "Philosophy", "History", "Art History", "English Literature", "Comparative Literature",
    "Creative Writing", "Journalism", "Communications", "Music", "Music Composition", "Theater", "Film Studies",
    "Fine Arts", "Graphic Design", "Architecture", "Urban Planning", "Nursing", "Pharmacy", "Public Health",
    "Nutrition", "Education", "Social Work", "Law", "Criminology", "Agricultural Science", "Forestry",
    "Geography", "Data Science", "Information Systems", "Cognitive Science", "Religious Studies", "Classics",
)

COMPANIES = (
    "Google", "Apple", "Microsoft", "Amazon", "Meta Platforms", "IBM", "Intel", "Oracle", "Cisco Systems", "Adobe",
    "Salesforce", "Nvidia", "Qualcomm", "Texas Instruments", "Hewlett-Packard", "Dell Technologies", "Netflix",
    "Uber", "Airbnb", "PayPal", "eBay", "Spotify", "SAP", "Siemens", "Bosch", "BMW", "Volkswagen",
    "Mercedes-Benz", "Toyota", "Honda", "Nissan", "Sony", "Panasonic", "Samsung Electronics", "LG Electronics",
    "Hyundai Motor Company", "Huawei", "Alibaba", "Tencent", "Baidu", "Infosys", "Tata Consultancy Services",
    "Wipro", "Reliance Industries", "General Electric", "General Motors", "Ford Motor Company", "Boeing",
    "Airbus", "Lockheed Martin", "Rolls-Royce", "Caterpillar", "3M", "Johnson & Johnson", "Pfizer", "Merck",
    "Novartis", "Roche", "AstraZeneca", "GlaxoSmithKline", "Sanofi", "Bayer", "Procter & Gamble", "Unilever",
    "Coca-Cola", "PepsiCo", "McDonald's", "Starbucks", "Walmart", "Costco", "IKEA", "Nike", "Adidas",
    "Goldman Sachs", "JPMorgan Chase", "Morgan Stanley", "Citigroup", "Bank of America", "Wells Fargo", "HSBC",
    "Barclays", "Deutsche Bank", "UBS", "BNP Paribas", "BlackRock", "the Vanguard Group", "American Express",
    "Visa", "Mastercard", "McKinsey & Company", "the Boston Consulting Group", "Bain & Company", "Deloitte",
    "PricewaterhouseCoopers", "KPMG", "Accenture", "ExxonMobil", "Chevron", "Shell", "BP", "TotalEnergies",
    "Saudi Aramco", "Philips", "Ericsson", "Nokia", "Volvo", "Maersk", "the Lego Group", "Novo Nordisk",
    "Shopify", "Bombardier", "Air Canada", "Delta Air Lines", "United Airlines", "British Airways", "Lufthansa",
    "Emirates", "Singapore Airlines", "Qatar Airways", "FedEx", "DHL", "the Walt Disney Company",
    "Universal Music Group", "the BBC", "the New York Times", "the Washington Post", "the Guardian", "Reuters",
    "Bloomberg", "the Associated Press", "the British Museum", "the Metropolitan Museum of Art", "the Louvre",
    "the Smithsonian Institution", "the Museum of Modern Art", "the National Gallery", "the Natural History Museum",
    "the United Nations", "the World Bank", "the International Monetary Fund", "the World Health Organization",
    "the European Central Bank", "the Federal Reserve", "the Bank of England",
    "the International Committee of the Red Cross", "UNICEF", "NASA", "the European Space Agency",
    "the Mayo Clinic", "the Cleveland Clinic", "Massachusetts General Hospital",
    "the Bill & Melinda Gates Foundation", "the Rockefeller Foundation", "the Ford Foundation", "Greenpeace",
    "Amnesty International", "Oxfam", "Doctors Without Borders", "the Royal Society", "the Max Planck Society",
    "the Brookings Institution", "the RAND Corporation", "Bell Labs", "Xerox", "Eastman Kodak", "Motorola",
    "Lenovo", "Xiaomi", "Canon", "Nintendo", "Electronic Arts", "Ubisoft", "Arm Holdings", "ASML",
    "Taiwan Semiconductor Manufacturing Company", "Heineken", "Anheuser-Busch InBev", "Diageo", "Danone",
    "Kraft Heinz", "Porsche", "Michelin", "Pirelli", "Tata Motors", "Mahindra & Mahindra", "Vodafone",
    "Deutsche Telekom", "Verizon", "AT&T", "Comcast", "Allianz", "AXA", "Prudential", "MetLife",
    "Berkshire Hathaway", "Marriott International", "Hilton", "Expedia", "LinkedIn", "Dropbox", "Atlassian",
    "Stripe",
)

# Sentence frames. {S} = subject (the tagged name in the first sentence, else He/She/They), {p} = his/her/
# their, {X} = the tagged value, {was} = was/were and {s} = "s"/"" for the verb's agreement with the subject
# (a name takes "was", "They" takes "were"). Every frame starts with the subject, so any field can come first.
# --------------------------------------------------------------------------------------------------

PAPER_FRAMES: dict[str, str] = {
    "date": "{S} {was} born on {X}.",
    "city": "{S} spent {p} early years in {X}.",
    "university": "{S} received mentorship and guidance from faculty members at {X}.",
    "major": "{S} completed {p} education with a focus on {X}.",
    "company": "{S} had a professional role at {X}.",
}
"""The paper's fixed template: one frame per field, as in its example biography (Problem Setup section)."""

VARIED_FRAMES: dict[str, tuple[str, ...]] = {
    "date": (
        PAPER_FRAMES["date"],
        "{S} came into this world on {X}.",
        "{S} entered the world on {X}.",
        "{S} arrived in the world on {X}.",
        "{S} {was} welcomed into the world on {X}.",
    ),
    "city": (
        "{S} {was} born in {X}.",
        PAPER_FRAMES["city"],
        "{S} hail{s} from {X}.",
        "{S} originated from {X}.",
        "{S} {was} brought into the world in {X}.",
    ),
    "university": (
        PAPER_FRAMES["university"],
        "{S} graduated from {X}.",
        "{S} studied at {X}.",
        "{S} completed {p} degree at {X}.",
        "{S} {was} a student at {X}.",
    ),
    "major": (
        PAPER_FRAMES["major"],
        "{S} majored in {X}.",
        "{S} specialized in {X}.",
        "{S} earned a degree in {X}.",
        "{S} devoted {p} studies to {X}.",
    ),
    "company": (
        PAPER_FRAMES["company"],
        "{S} worked for {X}.",
        "{S} {was} employed by {X}.",
        "{S} built a career at {X}.",
        "{S} accepted a position at {X}.",
    ),
}
"""``template="varied"``: five frames per field (the paper's first), one drawn at random per sentence."""

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {field: (frame,) for field, frame in PAPER_FRAMES.items()},
    "varied": VARIED_FRAMES,
}
"""The frames of each ``template`` value, per field."""

PRONOUNS: dict[str, tuple[str, str, str, str]] = {
    # gender: (subject pronoun, possessive, {was}, {s}) for a sentence whose subject is the pronoun
    "male": ("He", "his", "was", "s"),
    "female": ("She", "her", "was", "s"),
    "nonbinary": ("They", "their", "were", ""),
}

THEY_SHARE = 0.1
"""Fraction of generated people (drawn per person, seeded) referred to as they/their."""

DATE_MIN = datetime.date(1900, 1, 1)
DATE_MAX = datetime.date(2005, 12, 31)


@dataclass(frozen=True)
class Person:
    """One biography's facts; every attribute is the exact gold answer for its field.

    Attributes:
        name: Unique full name, e.g. ``"Liam Thompson"``.
        gender: ``"male"``, ``"female"`` or ``"nonbinary"`` (chooses He/his, She/her or They/their).
        date: Birth date, e.g. ``"January 5, 1990"``.
        city: Birth city with its country, e.g. ``"Oslo, Norway"``.
        university: University, with a leading ``"the"`` where English needs one.
        major: Field of study, e.g. ``"Biomedical Engineering"``.
        company: Employer, e.g. ``"the British Museum"``.
    """

    name: str
    gender: str
    date: str
    city: str
    university: str
    major: str
    company: str


FEWSHOT_PEOPLE: tuple[Person, ...] = (
    Person("Tim Cook", "male", "November 1, 1960", "Mobile, USA", "Auburn University",
           "Industrial Engineering", "Apple"),
    Person("Satya Nadella", "male", "August 19, 1967", "Hyderabad, India", "the Manipal Institute of Technology",
           "Electrical Engineering", "Microsoft"),
    Person("Andy Grove", "male", "September 2, 1936", "Budapest, Hungary", "the City College of New York",
           "Chemical Engineering", "Intel"),
    Person("Mary Barra", "female", "December 24, 1961", "Royal Oak, USA", "Kettering University",
           "Electrical Engineering", "General Motors"),
    Person("Jensen Huang", "male", "February 17, 1963", "Tainan, Taiwan", "Oregon State University",
           "Electrical Engineering", "Nvidia"),
    Person("Lisa Su", "female", "November 7, 1969", "Tainan, Taiwan", "the Massachusetts Institute of Technology",
           "Electrical Engineering", "Advanced Micro Devices"),
    Person("Susan Wojcicki", "female", "July 5, 1968", "Santa Clara, USA", "Harvard University",
           "History and Literature", "Google"),
    Person("Marissa Mayer", "female", "May 30, 1975", "Wausau, USA", "Stanford University",
           "Symbolic Systems", "Yahoo"),
    Person("Gwynne Shotwell", "female", "November 23, 1963", "Evanston, USA", "Northwestern University",
           "Mechanical Engineering", "SpaceX"),
    Person("Tim Berners-Lee", "male", "June 8, 1955", "London, United Kingdom", "the University of Oxford",
           "Physics", "CERN"),
    Person("Demis Hassabis", "male", "July 27, 1976", "London, United Kingdom", "the University of Cambridge",
           "Computer Science", "DeepMind"),
    Person("Reed Hastings", "male", "October 8, 1960", "Boston, USA", "Bowdoin College", "Mathematics",
           "Netflix"),
    Person("Alan Turing", "male", "June 23, 1912", "London, United Kingdom", "the University of Cambridge",
           "Mathematics", "the National Physical Laboratory"),
    Person("Steve Wozniak", "male", "August 11, 1950", "San Jose, USA",
           "the University of California, Berkeley", "Electrical Engineering and Computer Science", "Hewlett-Packard"),
)
"""Real, well-known people for ``data/biography_fewshot.csv`` (few-shot QA examples only).

Facts: birth date and city, a university attended, the field of study there, and one employer — each a
widely documented public fact (checked against their Wikipedia biographies).
"""

RESERVED_NAMES = frozenset(person.name for person in FEWSHOT_PEOPLE)
"""Full names the generator never produces (the few-shot people)."""

_FIRST_NAMES = MALE_FIRST_NAMES + FEMALE_FIRST_NAMES


def _excluded_name_indices() -> frozenset[int]:
    """Indices into the first-name x last-name grid that must not be used (reserved or "Henry Henry")."""
    n_last = len(LAST_NAMES)
    excluded = set()
    last_index = {last: j for j, last in enumerate(LAST_NAMES)}
    for i, first in enumerate(_FIRST_NAMES):
        if first in last_index:
            excluded.add(i * n_last + last_index[first])
    for name in RESERVED_NAMES:
        first, _, last = name.partition(" ")
        if first in _FIRST_NAMES and last in last_index:
            excluded.add(_FIRST_NAMES.index(first) * n_last + last_index[last])
    return frozenset(excluded)


_EXCLUDED = _excluded_name_indices()

MAX_PEOPLE = len(_FIRST_NAMES) * len(LAST_NAMES) - len(_EXCLUDED)
"""How many people with distinct full names the pools allow."""


def format_date(day: datetime.date) -> str:
    """Format a date like ``"January 5, 1990"`` (no leading zero, English month name)."""
    return f"{calendar.month_name[day.month]} {day.day}, {day.year}"


def generate_people(n: int, seed: int) -> list[Person]:
    """Draw ``n`` people with distinct full names.

    The first name sets the gender (he or she), except for a share :data:`THEY_SHARE` of people, drawn per
    person, who are referred to as they/their whatever their first name.

    Args:
        n: Number of people, ``1 <= n <= MAX_PEOPLE``.
        seed: Seed of the ``random.Random`` that draws everything.

    Returns:
        The people in drawing order.

    Raises:
        InputError: ``n`` is out of range.
    """
    if n < 1:
        raise InputError(f"n_people={n}: must be >= 1")
    if n > MAX_PEOPLE:
        raise InputError(f"n_people={n}: must be <= {MAX_PEOPLE}, the number of distinct full names the pools allow")
    rng = random.Random(seed)
    n_last = len(LAST_NAMES)
    grid = len(_FIRST_NAMES) * n_last
    # Sample grid cells without replacement (lazy over range, so no big list), then drop excluded cells.
    cells = [c for c in rng.sample(range(grid), min(grid, n + len(_EXCLUDED))) if c not in _EXCLUDED][:n]
    span_days = (DATE_MAX - DATE_MIN).days
    people = []
    for cell in cells:
        first_i, last_i = divmod(cell, n_last)
        date = format_date(DATE_MIN + datetime.timedelta(days=rng.randint(0, span_days)))
        city, university = rng.choice(CITIES), rng.choice(UNIVERSITIES)
        major, company = rng.choice(MAJORS), rng.choice(COMPANIES)
        if rng.random() < THEY_SHARE:
            gender = "nonbinary"
        else:
            gender = "male" if first_i < len(MALE_FIRST_NAMES) else "female"
        people.append(Person(f"{_FIRST_NAMES[first_i]} {LAST_NAMES[last_i]}", gender, date, city, university, major,
                             company))
    return people


def render_biography(
    person: Person, order: Sequence[str], rng: random.Random, template: str = "paper"
) -> str:
    """Write ``person``'s tagged biography, one sentence per field in ``order``.

    Args:
        person: The facts.
        order: A permutation of :data:`ATTRIBUTE_FIELDS`; the first field's sentence has the tagged name as
            subject, the others the person's pronoun (He, She or They, with the verb agreeing).
        rng: Chooses one frame per field when ``template="varied"``; not used by ``"paper"``.
        template: ``"paper"`` (the paper's frame for each field) or ``"varied"`` (see :data:`TEMPLATES`).

    Returns:
        The tagged text, e.g. ``"<name>Liam Thompson</name> was born on <date>January 5, 1990</date>. He ..."``.
    """
    frames = TEMPLATES[template]
    pronoun, possessive, pronoun_was, pronoun_s = PRONOUNS[person.gender]
    sentences = []
    for k, field in enumerate(order):
        choices = frames[field]
        frame = choices[0] if len(choices) == 1 else rng.choice(choices)
        # A name is a singular subject ("Sam Lee was born"), whatever the person's pronoun.
        subject, was, s = (f"<name>{person.name}</name>", "was", "s") if k == 0 else (pronoun, pronoun_was, pronoun_s)
        value = f"<{field}>{getattr(person, field)}</{field}>"
        sentences.append(frame.format(S=subject, p=possessive, X=value, was=was, s=s))
    return " ".join(sentences)


def _check_field_order(field_order: object) -> str | tuple[str, ...]:
    """Return ``"fixed"``, ``"permuted"`` or the explicit order as a tuple; raise InputError otherwise."""
    if isinstance(field_order, str):
        if field_order in FIELD_ORDER_MODES:
            return field_order
    elif isinstance(field_order, Sequence) and all(isinstance(f, str) for f in field_order):
        if sorted(field_order) == sorted(ATTRIBUTE_FIELDS):
            return tuple(field_order)
    shown = f"[{', '.join(map(str, field_order))}]" if isinstance(field_order, (list, tuple)) else field_order
    raise InputError(
        f'field_order={shown}: must be "fixed", "permuted" or a permutation of {", ".join(ATTRIBUTE_FIELDS)}'
    )


def _check_template(template: object) -> str:
    """Return ``template`` if it is one of :data:`TEMPLATE_MODES`; raise InputError otherwise."""
    if isinstance(template, str) and template in TEMPLATE_MODES:
        return template
    raise InputError(f'template={template}: must be "paper" (the paper\'s frames) or "varied" (several per field)')


def _check_int(key: str, value: object) -> int:
    """Return ``value`` as an int; raise InputError naming ``key`` if it is not an integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{key}={value}: must be an integer")
    return int(value)


def biography_texts(
    n_people: int, seed: int, field_order: str | Sequence[str] = "fixed", template: str = "paper"
) -> list[str]:
    """Return the tagged biographies ``make_biographies`` would write (validated like it)."""
    n_people = _check_int("n_people", n_people)
    seed = _check_int("seed", seed)
    order_spec = _check_field_order(field_order)
    template = _check_template(template)
    people = generate_people(n_people, seed)
    # Separate streams: the people depend on neither field_order nor template, and the permuted orders
    # do not depend on the template.
    order_rng = random.Random(f"order:{seed}")
    frame_rng = random.Random(f"render:{seed}")
    texts = []
    for person in people:
        if order_spec == "fixed":
            order: Sequence[str] = ATTRIBUTE_FIELDS
        elif order_spec == "permuted":
            order = order_rng.sample(ATTRIBUTE_FIELDS, len(ATTRIBUTE_FIELDS))
        else:
            order = order_spec
        texts.append(render_biography(person, order, frame_rng, template))
    return texts


def _csv_bytes(texts: list[str]) -> bytes:
    """The bytes of a one-column ``text`` CSV of ``texts`` (UTF-8, ``\\n`` line ends)."""
    return pd.DataFrame({"text": texts}).to_csv(index=False, lineterminator="\n").encode("utf-8")


def _write_text_csv(texts: list[str], output: Path) -> int:
    """Write a one-column ``text`` CSV atomically; return its size in bytes."""
    data = _csv_bytes(texts)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _check_output(output: object) -> Path:
    if output is None or str(output) == "":
        raise InputError("output=None: give the CSV file to write, e.g. output=data/biography.csv")
    path = Path(output)
    if path.is_dir():
        raise InputError(f"output={output}: is a folder; give a CSV file path, e.g. output=data/biography.csv")
    from elusive.outputs import Output, check_outputs

    check_outputs("make_biographies", [Output("output", output, path)], {})  # under a file, not writable
    return path


def make_biographies(
    n_people: int, seed: int, field_order: str | Sequence[str], output: Path, template: str = "paper",
    overwrite: bool = False,
) -> Path:
    """Generate ``n_people`` tagged biographies and write them to a one-column (``text``) CSV.

    Args:
        n_people: Number of people (distinct full names), ``1 <= n_people <= MAX_PEOPLE``.
        seed: Seed; the same arguments give a byte-identical file.
        field_order: ``"fixed"`` (date, city, university, major, company), ``"permuted"`` (a fresh random
            order per person) or an explicit permutation of those five field names.
        output: The CSV to write (atomically; parent folders are created).
        template: ``"paper"`` (the paper's five frames, one per field: "was born on", "spent his early years
            in", "received mentorship and guidance from faculty members at", "completed his education with
            a focus on", "had a professional role at") or ``"varied"`` (one of five frames per field, drawn
            with the seed).
        overwrite: Replace ``output`` if it exists (else refused, unless it holds exactly what would be written:
            then it is left as it is).

    Returns:
        ``output``.

    Raises:
        InputError: An argument is invalid, or ``output`` exists with other contents and ``overwrite`` is
            false; nothing is written.
    """
    path = _check_output(output)
    texts = biography_texts(n_people, seed, field_order, template)
    if path.exists() and not overwrite:
        if path.is_file() and path.read_bytes() == _csv_bytes(texts):
            log.info("%s already holds these %d biographies; left as it is", path, len(texts))
            return path
        raise InputError(f"output={output}: the file exists (a dataset someone made or committed); give a new "
                         "output= path, or add overwrite=true to replace it")
    size = _write_text_csv(texts, path)
    log.info("wrote %d biographies (template=%s, %d bytes) to %s", len(texts), template, size, path)
    return path


def make_fewshot(output: Path) -> Path:
    """Write :data:`FEWSHOT_PEOPLE` as tagged biographies (paper template, fixed order) to ``output``."""
    path = _check_output(output)
    rng = random.Random("fewshot")  # the paper template draws nothing from it
    texts = [render_biography(person, ATTRIBUTE_FIELDS, rng, "paper") for person in FEWSHOT_PEOPLE]
    size = _write_text_csv(texts, path)
    log.info("wrote %d few-shot biographies (%d bytes) to %s", len(texts), size, path)
    return path
