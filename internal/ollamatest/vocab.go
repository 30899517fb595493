package ollamatest

import "strings"

// vocabularyWords are the whole words of the tiny model: the kinds of words
// WAYWO project descriptions use, so generated texts are mostly whole-word
// tokens. Anything else still tokenises, letter by letter.
func vocabularyWords() []string { return strings.Fields(words) }

const words = `
a about after all also an and any app application apps are as at automation
backend based be best better between bot browser budget build builder building
built but by cache calendar can chat cli client cloud code coding collaborative
community compiler compute computer configuration container cost create data
database debug deploy desktop developer developers device devices distributed
docker document documents easy editor email embedded embedding energy engine
fast feature file files financial fitness for framework free from game games
garden generate generator git go graph hacker hardware health help home how
i image images in index infrastructure into is it its javascript job jobs just
kernel keyboard kubernetes language learn learning library lightweight linux
llm local log logs machine make manage management map maps market me memory
mobile model models monitoring music my native network new news no note notes
of on open or organize our over own people personal photo photos platform plugin
privacy project projects python queue quick rails react real recipe recipes
rust search security self server service simple site small social software
source sql sqlite static storage stream students system team terminal test
testing text that the their this time to tool tools track tracker tracking
travel typescript ui up use user users using video vector web website which
while with without work working workflow write writing you your zig
accounting analytics api audio backup bank bike board book books camera car
chess city climate clock color compose cooking course dashboard dating design
diagram diary dns drone education electric event events family farm feed
flight font forum friends fund garden gpu grid habit hiking hospital hotel
house invoice kids kitchen lab lamp language lease lesson lyrics mail math
medical meeting midi movie museum newsletter ocean office paint paper parking
payment pdf pet phone piano plant podcast poetry poker printer radio rental
robot running satellite school science sensor shop sleep soccer solar space
spreadsheet startup stock study synth tax taxi teacher telescope tennis theme
ticket train translation tutor vacation voice wallet watch weather wiki wine
wood yoga
`
